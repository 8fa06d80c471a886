"""Loading a bundle's image layout into a site registry: two real registries on loopback (the
upstream mirror a layout is pulled from, an empty site), every image under its site reference
with the upstream digest, shared layers uploaded once and mounted, a second load pushing
nothing, a tag that names another image, a damaged layout, a dry run, and a load killed with
SIGKILL mid-blobs then run again."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from astrago_deploy.bundle.load import load
from astrago_deploy.bundle.oci_layout import ImageLayout, blob_relpath
from astrago_deploy.core.errors import InputError, IntegrityError
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.reference import Reference

from .registry_support import DOCKER_MANIFEST, PROJECT, Proxy, RegistryProcess, build_image, build_index, sha256
from .test_bundle_layout import AMD, APP, ARM, TOOL, layers, pulled, upstream  # noqa: F401 (a fixture)
from .test_registry import push_image

MULTI = sha256(build_index([AMD, ARM], docker=True))
# Upstream reference -> where the site serves it (host dropped, path kept) and the digest.
EXPECTED = {
    "nvcr.io/nvidia/app:1.0": ("nvidia/app:1.0", APP.digest),
    "docker.io/library/tool:2": ("library/tool:2", TOOL.digest),
    "quay.io/team/multi:3": ("team/multi:3", MULTI),
}
BLOBS = {digest: data for image in (APP, TOOL, AMD, ARM) for digest, data in image.blobs.items()}
SHARED = layers(APP)[0]  # the base layer app, tool and multi's amd64 image share
# 10 blobs, 12 (repository, blob) pairs: the shared layer once in each of three repositories.
ALL_PUSHED = Counter(uploaded=len(BLOBS), mounted=2)
OTHER = build_image([{"etc/other": b"an image the site already had under the tag\n"}])


@pytest.fixture(scope="module")
def pristine(upstream: RegistryProcess, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """A layout pulled from the mirror, each image's source the upstream reference (what
    bundle.create records), the multi-arch index kept whole."""
    layout = pulled(upstream, tmp_path_factory.mktemp("pristine") / "images", None)
    layout.write_index([replace(e, source=e.source.split("/", 1)[1]) for e in layout.entries()])
    return layout.root


@pytest.fixture
def layout(pristine: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "images"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[RegistryProcess]:
    process = RegistryProcess(tmp_path / "site")
    yield process
    process.stop()


def catalog(registry: RegistryProcess) -> list[str]:
    with urllib.request.urlopen(f"http://{registry.host}/v2/_catalog", timeout=10) as reply:
        return list(json.load(reply)["repositories"])


def on_site(registry: RegistryProcess, path: str) -> Reference:
    return Reference.parse(f"{registry.host}/{path}")


def writes(proxy: Proxy) -> list[str]:
    return [f"{s.method} {s.path}" for s in proxy.seen if s.method not in ("GET", "HEAD")]


def test_every_image_lands_under_its_site_reference_with_the_upstream_digest(
    layout: Path, site: RegistryProcess
) -> None:
    client = RegistryClient({})
    report = load(layout, site.host, client)
    for path, digest in EXPECTED.values():
        served = client.head_manifest(on_site(site, path))
        assert served is not None and served.digest == digest, path
    # The Docker v2 schema 2 manifest is served as it was upstream, not converted.
    tool = client.get_manifest(on_site(site, "library/tool:2"))
    assert (tool.media_type, tool.data) == (DOCKER_MANIFEST, TOOL.manifest)
    # The index's images by digest, in the index's repository.
    for image in (AMD, ARM):
        assert client.get_manifest(on_site(site, f"team/multi@{image.digest}")).data == image.manifest
    # Each blob uploaded once; the shared layer mounted into the two other repositories.
    assert report.blobs == ALL_PUSHED
    assert report.bytes_uploaded == sum(len(data) for data in BLOBS.values())
    for repository in ("nvidia/app", "library/tool", "team/multi"):
        assert client.head_blob(on_site(site, repository), SHARED) == len(BLOBS[SHARED])
    assert report.manifests_pushed == 2 + 2 + 4  # app, tool: manifest and tag; multi: 2 images, index, tag
    summary = report.as_json()
    assert summary["images"] == {"pushed": 3, "present": 0, "skipped": 0} and not summary["pushed_nothing"]
    assert {e["source"]: e["site"] for e in summary["entries"]} == {
        source: f"{site.host}/{path}" for source, (path, _digest) in EXPECTED.items()
    }
    assert sorted(catalog(site)) == ["library/tool", "nvidia/app", "team/multi"]


def test_a_second_load_pushes_nothing_and_says_so(layout: Path, site: RegistryProcess) -> None:
    load(layout, site.host, RegistryClient({}))
    # Through a recording proxy to the same registry: the site is the proxy's address.
    proxy = Proxy(site.host)
    try:
        again = load(layout, proxy.host, RegistryClient({}))
    finally:
        proxy.stop()
    assert writes(proxy) == []
    assert again.pushed_nothing and again.blobs == Counter() and again.bytes_uploaded == 0
    assert {e.outcome for e in again.images} == {"present"} and len(again.images) == 3
    assert again.summary() == f"nothing to push: all 3 images are present in {proxy.host}"
    summary = json.loads(json.dumps(again.as_json()))
    assert summary["pushed_nothing"] is True and summary["images"] == {"pushed": 0, "present": 3, "skipped": 0}


def test_a_tag_naming_another_image_is_skipped_refused_or_overwritten(
    layout: Path, site: RegistryProcess, tmp_path: Path
) -> None:
    client = RegistryClient({})
    app = on_site(site, "nvidia/app:1.0")
    push_image(client, app, OTHER, tmp_path / "other")

    with pytest.raises(InputError, match=rf"{app} names {OTHER.digest}, the bundle has {APP.digest}") as refused:
        load(layout, site.host, client, on_existing="fail")
    assert "nothing was pushed" in str(refused.value)
    assert catalog(site) == ["nvidia/app"]  # the site as it was: nothing else pushed

    skipped = load(layout, site.host, client, on_existing="skip")
    assert [(e.source, e.outcome, e.site_digest) for e in skipped.images if e.outcome != "pushed"] == [
        ("nvcr.io/nvidia/app:1.0", "skipped", OTHER.digest)
    ]
    assert client.head_manifest(app).digest == OTHER.digest  # type: ignore[union-attr]
    # Without app's own layer and config; the shared layer uploaded once, mounted once.
    assert skipped.blobs == Counter(uploaded=len(BLOBS) - 2, mounted=1)

    overwritten = load(layout, site.host, client, on_existing="overwrite")
    assert [(e.source, e.outcome, e.site_digest) for e in overwritten.images if e.outcome == "pushed"] == [
        ("nvcr.io/nvidia/app:1.0", "pushed", OTHER.digest)
    ]
    assert client.head_manifest(app).digest == APP.digest  # type: ignore[union-attr]
    # The shared layer is mounted from an image already present on the site, not sent again.
    assert overwritten.blobs == Counter(uploaded=2, mounted=1)
    assert load(layout, site.host, client, on_existing="fail").pushed_nothing


def test_a_damaged_layout_is_refused_naming_the_blob_with_nothing_pushed(layout: Path, site: RegistryProcess) -> None:
    damaged = layers(APP)[1]
    path = ImageLayout(layout).blob_path(damaged)
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(IntegrityError, match=rf"damaged, nothing was pushed:\n{blob_relpath(damaged)}: content has"):
        load(layout, site.host, RegistryClient({}))
    assert catalog(site) == []


def test_a_dry_run_only_looks_and_reports_what_a_load_would_push(layout: Path, site: RegistryProcess) -> None:
    proxy = Proxy(site.host)
    try:
        report = load(layout, proxy.host, RegistryClient({}), dry_run=True)
    finally:
        proxy.stop()
    # Only looks: HEAD requests, and the one GET that asks whether the site is a Harbor.
    assert {s.method for s in proxy.seen if s.path != "/api/v2.0/systeminfo"} == {"HEAD"} and catalog(site) == []
    assert report.dry_run and report.blobs == ALL_PUSHED and report.manifests_pushed == 0
    assert report.bytes_uploaded == sum(len(data) for data in BLOBS.values())
    assert report.summary().startswith("3 images would push, 0 present, 0 skipped")


# Loads with one worker and kills itself (SIGKILL, no clean-up) once UPLOADS blobs are uploaded.
KILLED_LOAD = """
import os, signal, sys
from pathlib import Path
from astrago_deploy.bundle.load import load
from astrago_deploy.registry.client import RegistryClient
uploads = []
def progress(size):
    uploads.append(size)
    if len(uploads) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
load(Path(sys.argv[1]), sys.argv[2], RegistryClient({}), workers=1, progress=progress)
"""


def test_a_load_killed_mid_blobs_resumes_without_uploading_what_is_there(layout: Path, site: RegistryProcess) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_LOAD, str(layout), site.host, "3"], cwd=PROJECT, capture_output=True, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    there = {digest for digest in BLOBS if site.blob_file(digest).is_file()}
    assert len(there) == 3
    client = RegistryClient({})
    for path, _digest in EXPECTED.values():
        assert client.head_manifest(on_site(site, path)) is None  # no tag names an incomplete image

    proxy = Proxy(site.host)
    try:
        resumed = load(layout, proxy.host, client)
    finally:
        proxy.stop()
    sent = {
        parse_qs(urlsplit(s.path).query)["digest"][0]
        for s in proxy.seen
        if s.method == "PUT" and "/blobs/uploads/" in s.path
    }
    assert sent == set(BLOBS) - there
    # The 12 (repository, blob) pairs: the 3 blobs found where the killed run put them (and the
    # shared layer's mounts, if the killed run got that far), the rest uploaded or mounted now.
    assert resumed.blobs["uploaded"] == len(BLOBS) - 3 and resumed.blobs["existing"] >= 3
    assert resumed.blobs["existing"] + resumed.blobs["mounted"] == 3 + 2
    for path, digest in EXPECTED.values():
        assert client.head_manifest(on_site(site, path)).digest == digest  # type: ignore[union-attr]


def test_a_registry_path_prefixes_every_image_and_two_images_on_one_tag_are_refused(
    layout: Path, site: RegistryProcess
) -> None:
    client = RegistryClient({})
    load(layout, f"{site.host}/astrago", client)
    assert sorted(catalog(site)) == ["astrago/library/tool", "astrago/nvidia/app", "astrago/team/multi"]

    # ghcr.io/team/multi:3 and quay.io/team/multi:3 both map to SITE/team/multi:3.
    images = ImageLayout(layout)
    entries = images.entries()
    tool = next(e for e in entries if e.descriptor.digest == TOOL.digest)
    images.write_index([*entries, replace(tool, source="ghcr.io/team/multi:3")])
    with pytest.raises(InputError, match=r"ghcr.io/team/multi:3 and quay.io/team/multi:3 both load to .*/team/multi:3"):
        load(layout, site.host, client)
    assert sorted(catalog(site)) == ["astrago/library/tool", "astrago/nvidia/app", "astrago/team/multi"]
