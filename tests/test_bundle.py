"""`inv bundle.create`, `bundle.verify` and `bundle.load` end to end, through the real CLI: every
image of sample-site's inventory served (as test images built here) by a loopback registry
under IMAGE_MIRROR, the charts from the upstream mirror, the wheels through pip; the bundle
verified, damaged, tarred and split, and loaded into an empty loopback site registry."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.images.reference import parse_image, site_reference
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.manifest import Manifest
from astrago_deploy.registry.reference import Reference

from .conftest import PROJECT, git
from .registry_support import DOCKER_LIST, Image, RegistryProcess, build_image, build_index, sha256
from .test_registry import _needs_registry, push_image
from .test_upgrade import inv

ENV = "sample-site"
BASE = {"etc/os-release": b"ID=test\n" * 4000}  # one layer every image shares
MULTI = "nvcr.io/nvidia/gpu-operator"  # served as a two-platform index
# Images the render pins by digest, and the ingress-nginx value holding each one's digest. A test
# image cannot have upstream's digest: each is served as a two-platform index built here, and
# sample-site pins that index instead (a release layer), so the bundle must keep it whole.
PINNED = {
    "registry.k8s.io/ingress-nginx/controller": "controller.image",
    "registry.k8s.io/ingress-nginx/kube-webhook-certgen": "controller.admissionWebhooks.patch.image",
}
PIN_LAYER = Path("environments/customers") / ENV / "releases" / "ingress-nginx.yaml"


def with_pyproject(layout: RepoLayout) -> str:
    """Commit the task suite's pyproject.toml (a test project carries none): its wheels are bundled."""
    shutil.copy(PROJECT / "pyproject.toml", layout.root / "pyproject.toml")
    git(layout.root, "add", "pyproject.toml")
    git(layout.root, "commit", "-q", "-m", "the task suite's dependencies")
    return git(layout.root, "rev-parse", "HEAD").strip()


def image_names(layout: RepoLayout) -> list[str]:
    done = inv(layout.root, "images.list", "--env", ENV, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    found = data[0]["images"] if isinstance(data, list) else data["images"]
    return sorted(item["image"] for item in found)


def pin_test_indexes(
    layout: RepoLayout, client: RegistryClient, host: str, work: Path, served: dict[str, Image | bytes]
) -> None:
    """Serve a two-platform index for each image the render pins by digest and pin sample-site
    to it (committed, so bundle.create's REF has it)."""
    pins: dict[str, Any] = {}
    for name in image_names(layout):
        image = parse_image(name)
        if not image.digest:
            continue
        unpinned = name.partition("@")[0]
        dest = Reference.parse(f"{host}/{unpinned}")
        own = {"app/name": unpinned.encode()}
        amd, arm = build_image([BASE, own]), build_image([own], arch="arm64")
        for platform_image in (amd, arm):
            push_image(client, dest.at(platform_image.digest), platform_image, work)
        index = build_index([amd, arm], docker=True)
        client.put_manifest(dest, Manifest(DOCKER_LIST, index, sha256(index)))
        served[f"{unpinned}@{sha256(index)}"] = index
        where = pins
        for key in PINNED[f"{image.registry}/{image.repository}"].split("."):
            where = where.setdefault(key, {})
        where["digest"] = sha256(index)
    assert pins, "no image of sample-site is pinned by digest any more: drop pin_test_indexes"
    (layout.root / PIN_LAYER).parent.mkdir(parents=True, exist_ok=True)
    (layout.root / PIN_LAYER).write_text(yaml.safe_dump(pins))
    git(layout.root, "add", str(PIN_LAYER))
    git(layout.root, "commit", "-q", "-m", "pin ingress-nginx to the test indexes")


@pytest.fixture
def upstream(tmp_path: Path, synced_project: RepoLayout) -> Iterator[tuple[RegistryProcess, dict[str, Image | bytes]]]:
    """A registry holding a test image for every image sample-site needs, at HOST/<image>."""
    _needs_registry()
    process = RegistryProcess(tmp_path / "mirror-registry")
    client = RegistryClient({})
    served: dict[str, Image | bytes] = {}
    pin_test_indexes(synced_project, client, process.host, tmp_path / "push", served)
    for number, name in enumerate(image_names(synced_project)):
        if name in served:
            continue
        dest = Reference.parse(f"{process.host}/{name}")
        own = {"app/name": name.encode()}
        if name.startswith(MULTI + ":"):
            amd, arm = build_image([BASE, own]), build_image([own], arch="arm64")
            for image in (amd, arm):
                push_image(client, dest.at(image.digest), image, tmp_path / "push")
            index = build_index([amd, arm], docker=True)
            client.put_manifest(dest, Manifest(DOCKER_LIST, index, sha256(index)))
            served[name] = index
            served[name + "#amd64"] = amd
        else:
            image = build_image([BASE, own], docker=number % 2 == 0)
            push_image(client, dest, image, tmp_path / "push")
            served[name] = image
    yield process, served
    process.stop()


def test_create_verify_load_a_bundle_and_every_damage_is_named(
    synced_project: RepoLayout, upstream: tuple[RegistryProcess, dict[str, Image | bytes]], mirror: Path, tmp_path: Path
) -> None:
    layout = synced_project
    registry, served = upstream
    bundle = tmp_path / "B"
    head = with_pyproject(layout)
    git(layout.root, "branch", "prod")  # the last stage's branch: the default REF, named in repo.bundle
    (layout.root / "untracked-in-the-working-tree").write_text("never bundled\n")

    created = inv(layout.root, "bundle.create", "--env", ENV, "--out", str(bundle), "--mirror", str(mirror),
                  IMAGE_MIRROR=registry.host, timeout=900)  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    assert f"left out of {MULTI}" in created.stdout and "linux/arm64/v8" in created.stdout
    assert not (tmp_path / "B.partial").exists()

    document = json.loads((bundle / "bundle.json").read_bytes())
    assert document["format"] == 1 and document["source"]["commit"] == head
    assert document["environments"] == [{"name": ENV, "registry": "192.168.50.10:30002"}]
    names = {i["image"] for i in document["images"]}
    assert names == {n for n in served if "#" not in n}
    for record in document["images"]:
        expected = served.get(record["image"] + "#amd64") or served[record["image"]]
        if isinstance(expected, bytes):  # pinned by its index digest: carried whole, the site serves that digest
            assert record["digest"] == record["pulled"] == sha256(expected) and record["leftOut"] == []
            assert record["site"][ENV].endswith("@" + sha256(expected))
        else:
            assert record["digest"] == expected.digest  # byte-exact: the digest the mirror served
        assert record["site"][ENV] == str(site_reference(parse_image(record["image"]), "192.168.50.10:30002"))
    multi = next(r for r in document["images"] if r["image"].startswith(MULTI + ":"))
    index = served[multi["image"]]
    assert isinstance(index, bytes) and multi["pulled"] == sha256(index) and multi["leftOut"] == ["linux/arm64/v8"]
    assert [c["name"] for c in document["charts"]] == [
        "csi-driver-nfs", "gpu-operator", "harbor", "ingress-nginx", "kube-prometheus-stack"
    ]
    assert (bundle / "charts" / "helm.goharbor.io" / "harbor-1.14.2.tgz").is_file()
    index_yaml = (bundle / "charts" / "helm.goharbor.io" / "index.yaml").read_text()
    assert "1.14.2" in index_yaml and "1.15.0" not in index_yaml
    assert {t["name"] for t in document["tools"]} == {"helm", "helmfile", "kubectl"}
    assert any(w["name"].lower() == "invoke" for w in document["wheels"]["files"])
    assert "--hash=sha256:" in (bundle / "wheels" / "requirements.txt").read_text()
    assert not list(bundle.rglob("untracked-in-the-working-tree"))

    # The site's checks: sha256sum, the suite's verify, a clone of the repository.
    assert subprocess.run(["sha256sum", "-c", "--quiet", "SHA256SUMS"], cwd=bundle).returncode == 0
    verified = inv(layout.root, "bundle.verify", str(bundle), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    evidence = json.loads(verified.stdout)
    assert evidence["ok"] and evidence["images"] == len(names) and evidence["commit"] == head
    clone = tmp_path / "site-clone"
    subprocess.run(
        ["git", "-c", "advice.detachedHead=false", "clone", "-q", str(bundle / "repo.bundle"), str(clone)], check=True
    )
    assert git(clone, "rev-parse", "HEAD").strip() == head
    assert git(clone, "rev-parse", "--abbrev-ref", "HEAD").strip() == "prod"  # deploy finds HEAD at prod's tip
    assert document["source"]["branch"] == "prod"
    assert git(layout.root, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main", "refs/heads/prod"]

    # Load into an empty site registry: every image under its site reference, then nothing.
    site = RegistryProcess(tmp_path / "site-registry")
    try:
        certs = tmp_path / "certs.d"
        loaded = inv(layout.root, "bundle.load", str(bundle), "--registry", site.host, "--json",
                     "--containerd-config", str(certs))  # fmt: skip
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        hosts = sorted(p.parent.name for p in certs.glob("*/hosts.toml"))
        assert hosts == ["docker.io", "ghcr.io", "nvcr.io", "quay.io", "registry.k8s.io"]
        assert (certs / "docker.io" / "hosts.toml").read_text() == (
            f'server = "https://registry-1.docker.io"\n\n[host."http://{site.host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        )
        assert json.loads(loaded.stdout)["images"]["pushed"] == len(names)
        client = RegistryClient({})
        for record in document["images"]:
            where = site_reference(parse_image(record["image"]), site.host)
            found = client.head_manifest(Reference.parse(str(where)))
            assert found is not None and found.digest == record["digest"], record["image"]
        again = inv(layout.root, "bundle.load", str(bundle), "--registry", site.host)
        assert again.returncode == 0 and again.stdout.startswith("nothing to push"), again.stdout + again.stderr
    finally:
        site.stop()

    # One flipped byte in one blob: verify fails naming it.
    layer = max((bundle / "images" / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    data = bytearray(layer.read_bytes())
    data[100] ^= 0x01
    layer.write_bytes(bytes(data))
    damaged = inv(layout.root, "bundle.verify", str(bundle))
    assert damaged.returncode != 0
    assert f"images/blobs/sha256/{layer.name}: sha256 " in damaged.stderr
    assert f"images/blobs/sha256/{layer.name}: content has digest" in damaged.stderr


def test_a_tar_split_in_parts_verifies_from_its_parts_and_a_rerun_fetches_only_what_is_missing(
    synced_project: RepoLayout, upstream: tuple[RegistryProcess, dict[str, Image | bytes]], mirror: Path, tmp_path: Path
) -> None:
    layout = synced_project
    registry, served = upstream
    count = len({name for name in served if "#" not in name})  # every image of the inventory
    media = tmp_path / "media"
    media.mkdir()
    with_pyproject(layout)
    args = ["bundle.create", "--env", ENV, "--mirror", str(mirror), "--platform", "all"]

    # An earlier, interrupted run left its partial folder: the blobs there are not fetched again.
    first = inv(layout.root, *args, "--out", str(tmp_path / "first"), IMAGE_MIRROR=registry.host, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    (tmp_path / "first").rename(media / "site.partial")
    (media / "site.partial" / "bundle.json").unlink()
    made = inv(layout.root, *args, "--out", str(media / "site.tar"), "--split", "32MiB", IMAGE_MIRROR=registry.host,
               timeout=900)  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr
    fetched = re.findall(r"\] \S+: (\d+) blobs fetched", made.stdout)
    assert len(fetched) == count and set(fetched) == {"0"}, made.stdout
    assert re.findall(r"\] \S+: (\d+) blobs fetched", first.stdout).count("0") < count  # the first run fetched
    parts = sorted(media.glob("site.tar.part-*"))
    assert len(parts) > 3 and (media / "site.tar.sha256").is_file() and not (media / "site.tar").exists()
    assert "cat site.tar.part-* > site.tar" in made.stdout

    verified = inv(layout.root, "bundle.verify", str(parts[0]), "--extract-to", str(tmp_path / "site"))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert (tmp_path / "site" / "site" / "bundle.json").is_file()
    document = json.loads((tmp_path / "site" / "site" / "bundle.json").read_bytes())
    multi = next(r for r in document["images"] if r["image"].startswith(MULTI + ":"))
    assert multi["digest"] == multi["pulled"] and multi["leftOut"] == []  # --platform all: the index itself

    parts[1].write_bytes(parts[1].read_bytes()[:-10])
    broken = inv(layout.root, "bundle.verify", str(parts[0]))
    assert broken.returncode != 0 and "error:" in broken.stderr


def test_a_site_bootstraps_from_the_bundle_alone_and_renders(
    synced_project: RepoLayout, upstream: tuple[RegistryProcess, dict[str, Image | bytes]], mirror: Path, tmp_path: Path
) -> None:
    """The acceptance: a clone of `B/repo.bundle` bootstraps from B with no package index and no
    chart mirror, then renders the site. The bundled repository is this project itself (a clone
    of its committed HEAD), so the site runs the real bootstrap script and task suite."""
    registry, _served = upstream
    source = tmp_path / "source"
    git(tmp_path, "clone", "-q", str(PROJECT), str(source))
    # The test indexes the upstream registry serves for the images pinned by digest.
    (source / PIN_LAYER).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(synced_project.root / PIN_LAYER, source / PIN_LAYER)
    git(source, "add", str(PIN_LAYER))
    git(source, "commit", "-q", "-m", "pin ingress-nginx to the test indexes")
    (source / ".tools" / "bin").mkdir(parents=True)
    for binary in (PROJECT / ".tools" / "bin").iterdir():
        (source / ".tools" / "bin" / binary.name).symlink_to(binary)
    bundle = tmp_path / "B"
    made = inv(source, "bundle.create", "--env", ENV, "--out", str(bundle), "--mirror", str(mirror),
               IMAGE_MIRROR=registry.host, timeout=900)  # fmt: skip
    assert made.returncode == 0, made.stdout + made.stderr

    site = tmp_path / "astrago"
    git(tmp_path, "clone", "-q", str(bundle / "repo.bundle"), str(site))
    offline = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "CHARTS_MIRROR", "ASTRAGO_", "TOOLS_"))}
    offline.update({"PIP_NO_INDEX": "1", "ASTRAGO_BUNDLE": str(bundle), "HOME": str(tmp_path)})
    offline.pop("VIRTUAL_ENV", None)
    booted = subprocess.run(["scripts/bootstrap"], cwd=site, env=offline, capture_output=True, text=True, timeout=900)
    assert booted.returncode == 0, booted.stdout + booted.stderr
    assert "installed from directory" in booted.stdout + booted.stderr
    del offline["ASTRAGO_BUNDLE"]
    rendered = subprocess.run([str(site / ".venv" / "bin" / "inv"), "render", "--env", ENV], cwd=site, env=offline,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    assert (site / "rendered" / ENV / "harbor.yaml").is_file()
    assert "192.168.50.10:30002/goharbor/harbor-core:v2.10.2" in (site / "rendered" / ENV / "harbor.yaml").read_text()


def test_containerd_hosts_name_the_site_registry_with_its_path_and_refuse_odd_hosts(tmp_path: Path) -> None:
    from astrago_deploy.bundle import containerd
    from astrago_deploy.core.errors import InputError

    text = containerd.hosts_toml("nvcr.io", "harbor.site:8443/mirror", plain_http=False)
    assert text == (
        'server = "https://nvcr.io"\n\n[host."https://harbor.site:8443/v2/mirror"]\n'
        '  capabilities = ["pull", "resolve"]\n  override_path = true\n'
    )
    written = containerd.write_hosts(tmp_path, ["quay.io", "quay.io"], "10.0.0.5:30002", plain_http=True)
    assert written == [tmp_path / "quay.io" / "hosts.toml"]
    assert '[host."http://10.0.0.5:30002"]' in written[0].read_text()
    with pytest.raises(InputError, match="invalid registry host"):
        containerd.write_hosts(tmp_path, ["../etc"], "10.0.0.5:30002", plain_http=False)


def test_an_incremental_bundle_carries_only_the_blobs_its_base_lacks(
    synced_project: RepoLayout, upstream: tuple[RegistryProcess, dict[str, Image | bytes]], mirror: Path, tmp_path: Path
) -> None:
    layout = synced_project
    registry, served = upstream
    with_pyproject(layout)
    create = ["bundle.create", "--env", ENV, "--mirror", str(mirror)]
    first = inv(layout.root, *create, "--out", str(tmp_path / "B1"), IMAGE_MIRROR=registry.host, timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    # Upstream moves one tag to a new image (the shared base layer, a new own layer).
    moved = next(n for n in sorted(served) if n.startswith("docker.io/goharbor/harbor-core:"))
    newer = build_image([BASE, {"app/name": b"harbor-core, rebuilt"}])
    push_image(RegistryClient({}), Reference.parse(f"{registry.host}/{moved}"), newer, tmp_path / "push2")
    second = inv(layout.root, *create, "--out", str(tmp_path / "B2"), "--base", str(tmp_path / "B1"),
                 IMAGE_MIRROR=registry.host, timeout=900)  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr

    b1, b2 = tmp_path / "B1", tmp_path / "B2"
    own = sorted(p.name for p in (b2 / "images" / "blobs" / "sha256").iterdir())
    manifests = {json.loads(p.read_bytes()).get("mediaType", "") for p in (b2 / "images" / "blobs" / "sha256").iterdir()
                 if p.name not in {d.removeprefix("sha256:") for d in newer.blobs}}  # fmt: skip
    # Only the moved image's new layer and config, plus every manifest (small, always carried).
    assert set(own) >= {d.removeprefix("sha256:") for d in newer.blobs if d != layers(newer)[0]}
    assert layers(newer)[0].removeprefix("sha256:") not in own  # the shared layer: in B1
    assert all("manifest" in m or "index" in m for m in manifests), manifests
    document = json.loads((b2 / "bundle.json").read_bytes())
    assert document["base"]["bundleJson"] == "sha256:" + hashlib.sha256((b1 / "bundle.json").read_bytes()).hexdigest()
    assert document["base"]["blobs"] > 30

    alone = inv(layout.root, "bundle.verify", str(b2))
    assert alone.returncode != 0 and "an incremental bundle on the bundle whose bundle.json is" in alone.stderr
    verified = inv(layout.root, "bundle.verify", str(b2), "--base", str(b1), "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["fromBase"] == document["base"]["blobs"]
    wrong = inv(layout.root, "bundle.verify", str(b1), "--base", str(b2))
    assert wrong.returncode != 0 and "this bundle is complete" in wrong.stderr

    site = RegistryProcess(tmp_path / "site-registry")
    try:
        refused = inv(layout.root, "bundle.load", str(b2), "--registry", site.host)
        assert refused.returncode != 0 and "give it with --base" in refused.stderr, refused.stderr
        loaded = inv(layout.root, "bundle.load", str(b2), "--registry", site.host, "--base", str(b1))
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        found = RegistryClient({}).head_manifest(Reference.parse(str(site_reference(parse_image(moved), site.host))))
        assert found is not None and found.digest == newer.digest
    finally:
        site.stop()
    # A site that loaded the base before takes the incremental bundle alone.
    later = RegistryProcess(tmp_path / "later-registry")
    try:
        assert inv(layout.root, "bundle.load", str(b1), "--registry", later.host).returncode == 0
        alone_load = inv(layout.root, "bundle.load", str(b2), "--registry", later.host)
        assert alone_load.returncode == 0, alone_load.stdout + alone_load.stderr
        assert "1 skipped (their tag names another image)" in alone_load.stdout  # the moved tag, left as it was
        alone_load = inv(layout.root, "bundle.load", str(b2), "--registry", later.host, "--on-existing", "overwrite")
        assert alone_load.returncode == 0, alone_load.stdout + alone_load.stderr
        found = RegistryClient({}).head_manifest(Reference.parse(str(site_reference(parse_image(moved), later.host))))
        assert found is not None and found.digest == newer.digest
    finally:
        later.stop()


def layers(image: Image) -> list[str]:
    return [layer["digest"] for layer in json.loads(image.manifest)["layers"]]
