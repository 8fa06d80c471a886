"""Charts in OCI registries: a real loopback registry (CNCF distribution), charts pushed with helm.

The registry binary comes from scripts/install-test-registry (Debian's docker-registry,
unpacked into .tools/registry/), or ASTRAGO_TEST_REGISTRY names another one. Without it these
tests fail, telling how to install it, unless ASTRAGO_SKIP_OCI=1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from astrago_deploy.charts.oci import CHART_LAYER, OciChart, OciClient
from astrago_deploy.charts.vendor import ChartVendor, OutdatedRow
from astrago_deploy.core.errors import AstragoError, FetchError, IntegrityError
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model.lock import LockedChart, VersionsLock

from .chart_fixtures import chart_tgz, reference_tree_digest, sha256
from .conftest import PROJECT, HttpServer, snapshot
from .registry_support import REGISTRY_BINARY, RegistryProcess

HELM = PROJECT / ".tools" / "bin" / "helm"
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    helm_env: dict[str, str]
    work: Path

    def new_repository(self) -> str:
        """A fresh repository path per test (the registry is shared by the session)."""
        return f"oci://{self.host}/t{uuid.uuid4().hex[:12]}"

    def push(self, repository: str, payload: bytes, name: str, version: str) -> str:
        """`helm push` the archive; returns the manifest digest helm reports."""
        folder = self.work / uuid.uuid4().hex
        folder.mkdir()
        archive = folder / f"{name}-{version}.tgz"
        archive.write_bytes(payload)
        done = subprocess.run(
            [str(HELM), "push", str(archive), repository, "--plain-http"],
            env=self.helm_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        digest = next(
            line.split()[-1] for line in (done.stdout + done.stderr).splitlines() if line.startswith("Digest:")
        )
        return digest

    def get(self, path: str, accept: str = MANIFEST_ACCEPT) -> tuple[dict[str, str], bytes]:
        request = urllib.request.Request(f"http://{self.host}{path}", headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=10) as reply:
            return dict(reply.headers), reply.read()

    def tag_digest(self, repository: str, name: str, tag: str) -> str:
        path = repository.removeprefix(f"oci://{self.host}")
        headers, body = self.get(f"/v2{path}/{name}/manifests/{tag}")
        assert headers["Docker-Content-Digest"] == sha256(body)
        return headers["Docker-Content-Digest"]

    def blob_file(self, digest: str) -> Path:
        hexdigest = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    if os.environ.get("ASTRAGO_SKIP_OCI") == "1":
        pytest.skip("ASTRAGO_SKIP_OCI=1: OCI registry tests skipped")
    if not REGISTRY_BINARY.is_file():
        pytest.fail(
            f"the test OCI registry is not installed ({REGISTRY_BINARY} is missing): "
            "run scripts/install-test-registry (or set ASTRAGO_SKIP_OCI=1 to skip these tests)",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("registry")
    state = root / "helm"
    helm_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HELM_")},
        "HELM_CONFIG_HOME": str(state / "config"),
        "HELM_CACHE_HOME": str(state / "cache"),
        "HELM_DATA_HOME": str(state / "data"),
        "HELM_PLUGINS": str(state / "plugins"),
        "HELM_REGISTRY_CONFIG": str(state / "registry.json"),
        "TMPDIR": str(root),
    }
    work = root / "work"
    work.mkdir()
    try:
        process = RegistryProcess(root / "server")
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield Registry(process.host, process.storage, helm_env, work)
    finally:
        process.stop()


def oci_block(chart: LockedChart) -> str:
    return (
        f"  {chart.name}:\n"
        f"    repository: {chart.repository}\n"
        f"    version: {chart.version}\n"
        f"    digest: {chart.digest}\n"
        f"    manifest: {chart.manifest}\n"
        f"    tree: {chart.tree}\n"
    )


COMMITTED_LOCK = (PROJECT / "charts" / "versions.lock").read_text()
ORIGINAL = chart_tgz("demo", "0.1.0", crds=True)
REPLACEMENT = chart_tgz("demo", "0.1.0", greeting="replaced", crds=True)


@pytest.fixture
def pushed(registry: Registry, synced_project: RepoLayout) -> tuple[RepoLayout, str, LockedChart]:
    """A synced project with demo 0.1.0 added from a fresh registry repository."""
    repository = registry.new_repository()
    registry.push(repository, ORIGINAL, "demo", "0.1.0")
    chart = ChartVendor(synced_project, Fetcher()).add("demo", repository, "0.1.0")
    return synced_project, repository, chart


def test_add_vendors_a_chart_pinned_by_manifest_digest(registry: Registry, synced_project: RepoLayout) -> None:
    repository = registry.new_repository()
    manifest = registry.push(repository, ORIGINAL, "demo", "0.1.0")
    assert registry.tag_digest(repository, "demo", "0.1.0") == manifest

    chart = ChartVendor(synced_project, Fetcher()).add("demo", repository, "0.1.0")

    folder = synced_project.chart_dir("demo", "0.1.0")
    assert chart == LockedChart(
        name="demo",
        repository=repository,
        version="0.1.0",
        digest=sha256(ORIGINAL),  # helm pushes the archive bytes as the chart layer
        manifest=manifest,
        tree=reference_tree_digest(folder),
    )
    assert chart.complete
    assert synced_project.lock_file.read_text() == COMMITTED_LOCK + oci_block(chart)
    assert (folder / "values.yaml").read_text() == "# Default values of demo.\ngreeting: hello\n"
    assert ChartVendor(synced_project, Fetcher()).verify() == []


def test_add_of_a_missing_tag_names_it_and_changes_nothing(registry: Registry, synced_project: RepoLayout) -> None:
    repository = registry.new_repository()
    registry.push(repository, ORIGINAL, "demo", "0.1.0")
    before = snapshot(synced_project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(synced_project, Fetcher()).add("demo", repository, "9.9.9")

    assert str(caught.value) == (
        f"demo: {repository}/demo: 9.9.9 not found; nothing was changed (charts/external and the lock are as before)"
    )
    with pytest.raises(FetchError, match=r"^oci://127\.0\.0\.1:\d+/t[0-9a-f]+/demo: no such repository$"):
        OciClient(Fetcher()).tags(OciChart(registry.new_repository(), "demo"))
    assert snapshot(synced_project.root) == before


def test_resync_uses_the_pinned_manifest_not_the_moved_tag(
    registry: Registry, pushed: tuple[RepoLayout, str, LockedChart], mirror: Path
) -> None:
    project, repository, chart = pushed
    lock_text = project.lock_file.read_text()
    folder = project.chart_dir("demo", "0.1.0")
    vendored = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    moved = registry.push(repository, REPLACEMENT, "demo", "0.1.0")
    assert moved != chart.manifest
    assert registry.tag_digest(repository, "demo", "0.1.0") == moved
    shutil.rmtree(project.external_dir)

    done = ChartVendor(project, Fetcher(mirror=Mirror(str(mirror)))).sync()

    # Every locked chart vendored again, in the lock's order (demo, the OCI chart, last).
    assert [(r.name, r.action) for r in done] == [(name, "vendored") for name in VersionsLock.load(project.lock_file).names()]
    assert done[-1].name == "demo"
    assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == vendored
    assert project.lock_file.read_text() == lock_text


def test_a_moved_tag_fails_integrity_when_only_the_archive_is_pinned(
    registry: Registry, pushed: tuple[RepoLayout, str, LockedChart]
) -> None:
    project, repository, chart = pushed
    # A hand-written entry pinned by archive digest only: the tag is resolved at sync time.
    project.lock_file.write_text(project.lock_file.read_text().replace(f"    manifest: {chart.manifest}\n", ""))
    registry.push(repository, REPLACEMENT, "demo", "0.1.0")
    before = snapshot(project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(project, Fetcher()).sync()

    assert str(caught.value) == (
        f"demo 0.1.0: archive sha256 {sha256(REPLACEMENT)} does not match the lock's {sha256(ORIGINAL)}; "
        "nothing was changed (charts/external and the lock are as before)"
    )
    assert snapshot(project.root) == before


def test_a_tampered_registry_blob_fails_integrity_and_changes_nothing(
    registry: Registry, pushed: tuple[RepoLayout, str, LockedChart]
) -> None:
    project, _repository, chart = pushed
    blob = registry.blob_file(chart.digest)
    original = blob.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF  # same length: the registry serves it as is
    blob.write_bytes(bytes(tampered))
    values = project.chart_dir("demo", "0.1.0") / "values.yaml"
    values.write_text(values.read_text() + "edited: true\n")  # sync must re-vendor demo
    before = snapshot(project.root)
    try:
        with pytest.raises(AstragoError) as caught:
            ChartVendor(project, Fetcher()).sync()
    finally:
        blob.write_bytes(original)

    assert str(caught.value) == (
        f"demo: chart layer digest mismatch (expected {chart.digest}, got {sha256(bytes(tampered))}); "
        "nothing was changed (charts/external and the lock are as before)"
    )
    assert snapshot(project.root) == before


def test_outdated_lists_the_newest_tag(
    registry: Registry, pushed: tuple[RepoLayout, str, LockedChart], mirror: Path
) -> None:
    project, repository, _chart = pushed
    for version in ("0.2.0", "1.0.0", "1.1.0-rc.1"):
        registry.push(repository, chart_tgz("demo", version), "demo", version)
    # A valid OCI tag (up to 128 characters) that is too long to become charts/external/NAME-VERSION.
    long_tag = "9.0.0-" + "a" * 100
    registry.push(repository, chart_tgz("demo", long_tag), "demo", long_tag)

    vendor = ChartVendor(project, Fetcher(mirror=Mirror(str(mirror))))
    rows = {row.name: row for row in vendor.outdated()}
    with_pre = {row.name: row for row in vendor.outdated(prereleases=True)}

    assert rows["demo"] == OutdatedRow("demo", "0.1.0", "1.0.0", "0.2.0", "major", repository)
    assert with_pre["demo"].newest == "1.1.0-rc.1"
    assert rows["gpu-operator"].newest == "v26.7.0"
    assert VersionsLock.load(project.lock_file).get("demo").version == "0.1.0"


# --- manifest verification against a registry that lies (static files over loopback HTTP) ----


@pytest.fixture
def static_registry(tmp_path: Path, serve: Callable[[Path], HttpServer]) -> tuple[HttpServer, str, str, bytes]:
    """`/v2/charts/demo/...` laid out as files: a manifest by tag and digest, and its layer."""
    payload = ORIGINAL
    layer = sha256(payload)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": sha256(b"{}"), "size": 2},
            "layers": [{"mediaType": CHART_LAYER, "digest": layer, "size": len(payload)}],
        }
    ).encode()
    base = tmp_path / "static" / "v2" / "charts" / "demo"
    (base / "manifests").mkdir(parents=True)
    (base / "blobs").mkdir()
    (base / "manifests" / "0.1.0").write_bytes(manifest)
    (base / "manifests" / sha256(manifest)).write_bytes(manifest)
    (base / "blobs" / layer).write_bytes(payload)
    return serve(tmp_path / "static"), sha256(manifest), layer, manifest


def test_the_oci_client_verifies_manifest_and_layer(static_registry: tuple[HttpServer, str, str, bytes]) -> None:
    server, manifest_digest, layer, manifest = static_registry
    chart = OciChart(f"oci://{server.url.removeprefix('http://')}/charts", "demo")
    client = OciClient(Fetcher(backoff=0.0))

    assert client.resolve(chart, "0.1.0") == manifest_digest
    assert client.pull(chart, manifest_digest) == (ORIGINAL, layer)

    server.faults.replace[f"/v2/charts/demo/manifests/{manifest_digest}"] = manifest.replace(b'"size": 2', b'"size": 3')
    with pytest.raises(IntegrityError, match=r"^demo: OCI manifest digest mismatch \(expected sha256:"):
        client.pull(chart, manifest_digest)

    del server.faults.replace[f"/v2/charts/demo/manifests/{manifest_digest}"]
    server.faults.replace[f"/v2/charts/demo/blobs/{layer}"] = REPLACEMENT
    with pytest.raises(IntegrityError) as caught:
        client.pull(chart, manifest_digest)
    assert str(caught.value) == f"demo: chart layer digest mismatch (expected {layer}, got {sha256(REPLACEMENT)})"


def test_a_missing_registry_binary_fails_the_tests_with_the_fix(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ASTRAGO_SKIP_OCI"}
    env["ASTRAGO_TEST_REGISTRY"] = str(tmp_path / "no-such-registry")
    node = f"{Path(__file__).relative_to(PROJECT)}::test_add_vendors_a_chart_pinned_by_manifest_digest"
    # A separate basetemp: the inner run must not clean up this run's temporary folders.
    pytest_cmd = [str(PROJECT / ".venv/bin/python"), "-m", "pytest", node, "-q", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [*pytest_cmd, "--basetemp", str(tmp_path / "first")],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout
    assert "1 error" in done.stdout
    assert f"the test OCI registry is not installed ({tmp_path / 'no-such-registry'} is missing)" in done.stdout
    assert "run scripts/install-test-registry" in done.stdout

    env["ASTRAGO_SKIP_OCI"] = "1"
    skipped = subprocess.run(
        [*pytest_cmd, "--basetemp", str(tmp_path / "second")],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert skipped.returncode == 0, skipped.stdout
    assert "1 skipped" in skipped.stdout


def test_oci_mirror_stands_in_for_the_upstream_registry(registry: Registry, synced_project: RepoLayout) -> None:
    """An air-gapped site's registry holds upstream charts under <host>/<path>: OCI_MIRROR reads them there."""
    upstream = f"oci://ghcr.io/acme-{uuid.uuid4().hex[:8]}/charts"
    mirrored = f"oci://{registry.host}/{upstream.removeprefix('oci://')}"
    manifest = registry.push(mirrored, ORIGINAL, "demo", "0.1.0")
    fetcher = Fetcher(environ={**os.environ, "OCI_MIRROR": registry.host}, retries=0)

    chart = ChartVendor(synced_project, fetcher).add("demo", upstream, "0.1.0")

    assert (chart.repository, chart.manifest, chart.digest) == (upstream, manifest, sha256(ORIGINAL))
    assert registry.host not in synced_project.lock_file.read_text()  # the lock names upstream only
    shutil.rmtree(synced_project.chart_dir("demo", "0.1.0"))
    assert [r.action for r in ChartVendor(synced_project, fetcher).sync(["demo"])] == ["vendored"]
    # Without the mirror the upstream host is asked (and cannot be reached here).
    with pytest.raises(FetchError, match=r"https://ghcr\.io/v2/acme-"):
        OciClient(Fetcher(environ={}, retries=0, timeout=2)).tags(OciChart(upstream, "demo"))
