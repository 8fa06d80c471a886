"""Chart vendoring: sync, add, verify and outdated against real repositories.

The real upstream charts come from the mirror (../shared/upstream), read as a directory or
served by a loopback HTTP server with fault injection; fixture charts are real archives built
by tests/chart_fixtures.py. Failing runs must leave the repository byte-identical.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from astrago_deploy.charts import scaffold
from astrago_deploy.charts.index import newest, newest_first
from astrago_deploy.charts.vendor import ChartVendor, OutdatedRow, SyncResult
from astrago_deploy.core.diagnostics import Diagnostic, format_diagnostic
from astrago_deploy.core.errors import AstragoError, FetchError, InputError
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model.lock import LockedChart, VersionsLock

from .chart_fixtures import (
    RepoChart,
    chart_tgz,
    demo_repo,
    reference_tree_digest,
    sha256,
    tar_slip_tgz,
    write_repo,
)
from .conftest import PROJECT, HttpServer, loopback, snapshot
from .lock_support import charts_lock_held, read_until

Serve = Callable[[Path], HttpServer]

COMMITTED_LOCK = (PROJECT / "charts" / "versions.lock").read_text()
GPU_DIGEST = "sha256:6e6fcaf32851c9949fa3fde98e8e0f5a1c0febb8d97de2aaa2722978ef1fe6c4"
CSI_REPO = "raw.githubusercontent.com/kubernetes-csi/csi-driver-nfs/master/charts"
INDEXES = {
    "csi-driver-nfs": f"/{CSI_REPO}/index.yaml",
    "gpu-operator": "/nvidia.github.io/gpu-operator/index.yaml",
    "harbor": "/helm.goharbor.io/index.yaml",
    "ingress-nginx": "/kubernetes.github.io/ingress-nginx/index.yaml",
    "kube-prometheus-stack": "/prometheus-community.github.io/helm-charts/index.yaml",
}
ARCHIVES = {
    "csi-driver-nfs": f"/{CSI_REPO}/v4.9.0/csi-driver-nfs-v4.9.0.tgz",
    "gpu-operator": "/nvidia.github.io/gpu-operator/stable/gpu-operator-v25.3.4.tgz",
    "harbor": "/helm.goharbor.io/harbor-1.14.2.tgz",
    # The index names a GitHub release asset: another host, mirrored under github.com/.
    "ingress-nginx": "/github.com/kubernetes/ingress-nginx/releases/download/helm-chart-4.11.3/ingress-nginx-4.11.3.tgz",
    # The index names a release asset on another host: the mirror keeps it under github.com/.
    "kube-prometheus-stack": (
        "/github.com/prometheus-community/helm-charts/releases/download/"
        "kube-prometheus-stack-58.0.1/kube-prometheus-stack-58.0.1.tgz"
    ),
}
VENDORED = {
    "csi-driver-nfs": "csi-driver-nfs-v4.9.0",
    "gpu-operator": "gpu-operator-v25.3.4",
    "harbor": "harbor-1.14.2",
    "ingress-nginx": "ingress-nginx-4.11.3",
    "kube-prometheus-stack": "kube-prometheus-stack-58.0.1",
}
INV = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT)]


def strip_pins(text: str) -> str:
    """The lock with only repository and version per chart (as a hand-written entry would be)."""
    return re.sub(r"^    (url|digest|tree|manifest): .*\n", "", text, flags=re.MULTILINE)


def index_digest(mirror: Path, name: str, version: str) -> str:
    entries = yaml.safe_load((mirror / INDEXES[name].lstrip("/")).read_text())["entries"][name]
    (entry,) = [e for e in entries if e["version"] == version]
    return f"sha256:{entry['digest']}"


def requested(server: HttpServer) -> Counter[str]:
    return Counter(path for path, _headers in server.faults.requests)


def fast_fetcher(mirror: str | Path | None = None, retries: int = 4) -> Fetcher:
    """A real fetcher without the production back-off pauses (retries still happen)."""
    return Fetcher(mirror=Mirror(str(mirror)) if mirror else None, retries=retries, backoff=0.0)


def results(items: list[SyncResult]) -> list[tuple[str, str, str]]:
    return [(r.name, r.version, r.action) for r in items]


def inv(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("CHARTS_MIRROR", "ASTRAGO_ROOT")}
    environ.update({"ASTRAGO_ROOT": str(root), "NO_COLOR": "1", **env})
    return subprocess.run([*INV, *args], cwd=root, env=environ, capture_output=True, text=True, timeout=120)


# --- sync -------------------------------------------------------------------------------------


def test_sync_from_the_mirror_directory_pins_the_index_digests(project: RepoLayout, mirror: Path) -> None:
    project.lock_file.write_text(strip_pins(COMMITTED_LOCK))
    vendor = ChartVendor(project, Fetcher(mirror=Mirror(str(mirror))))

    done = vendor.sync()

    assert results(done) == [
        ("csi-driver-nfs", "v4.9.0", "vendored"),
        ("gpu-operator", "v25.3.4", "vendored"),
        ("harbor", "1.14.2", "vendored"),
        ("ingress-nginx", "4.11.3", "vendored"),
        ("kube-prometheus-stack", "58.0.1", "vendored"),
    ]
    # Filled in exactly as committed: same lines, comments and order.
    assert project.lock_file.read_text() == COMMITTED_LOCK
    lock = VersionsLock.load(project.lock_file)
    assert lock.get("gpu-operator").digest == GPU_DIGEST
    for chart in lock.charts():
        assert chart.digest == index_digest(mirror, chart.name, chart.version)
        folder = project.chart_dir(chart.name, chart.version)
        assert yaml.safe_load((folder / "Chart.yaml").read_text())["version"] == chart.version
        assert reference_tree_digest(folder) == chart.tree
    assert vendor.indexes.fetches == len(INDEXES)
    assert sorted(p.name for p in project.external_dir.iterdir()) == sorted(VENDORED.values())
    assert vendor.verify() == []


def test_sync_through_invoke(project: RepoLayout, mirror: Path) -> None:
    project.lock_file.write_text(strip_pins(COMMITTED_LOCK))

    first = inv(project.root, "charts.sync", CHARTS_MIRROR=str(mirror))
    second = inv(project.root, "charts.sync", "--mirror", str(mirror))

    assert first.returncode == 0, first.stderr
    assert [line.split() for line in first.stdout.splitlines()] == [
        ["csi-driver-nfs", "v4.9.0", "vendored"],
        ["gpu-operator", "v25.3.4", "vendored"],
        ["harbor", "1.14.2", "vendored"],
        ["ingress-nginx", "4.11.3", "vendored"],
        ["kube-prometheus-stack", "58.0.1", "vendored"],
    ]
    assert f"reading upstream charts through the mirror {mirror}" in first.stderr
    assert project.lock_file.read_text() == COMMITTED_LOCK
    assert second.returncode == 0, second.stderr
    assert [line.split()[-1] for line in second.stdout.splitlines()] == ["unchanged"] * len(VENDORED)


def test_sync_through_a_loopback_http_mirror_fetches_each_index_once(
    project: RepoLayout, mirror: Path, serve: Serve
) -> None:
    server = serve(mirror)
    project.lock_file.write_text(strip_pins(COMMITTED_LOCK))

    done = ChartVendor(project, fast_fetcher(server.url)).sync()

    assert [r.action for r in done] == ["vendored"] * len(VENDORED)
    assert project.lock_file.read_text() == COMMITTED_LOCK  # upstream URLs, not the mirror's
    assert requested(server) == Counter({**dict.fromkeys(INDEXES.values(), 1), **dict.fromkeys(ARCHIVES.values(), 1)})


def test_a_pinned_lock_needs_no_index(project: RepoLayout, mirror: Path, serve: Serve) -> None:
    server = serve(mirror)
    ChartVendor(project, fast_fetcher(server.url)).sync()
    assert requested(server) == Counter(dict.fromkeys(ARCHIVES.values(), 1))
    assert project.lock_file.read_text() == COMMITTED_LOCK


def test_one_index_serves_every_chart_of_its_repository(
    synced_project: RepoLayout, tmp_path: Path, serve: Serve
) -> None:
    repo = demo_repo(tmp_path / "site")
    server = serve(repo.root)
    lock_text = synced_project.lock_file.read_text()
    synced_project.lock_file.write_text(
        lock_text
        + f"  demo:\n    repository: {server.url}\n    version: 0.2.0\n"
        + f"  extra:\n    repository: {server.url}/\n    version: 1.0.0\n"
    )

    done = ChartVendor(synced_project, fast_fetcher()).sync()

    assert results(done) == [
        ("csi-driver-nfs", "v4.9.0", "unchanged"),
        ("gpu-operator", "v25.3.4", "unchanged"),
        ("harbor", "1.14.2", "unchanged"),
        ("ingress-nginx", "4.11.3", "unchanged"),
        ("kube-prometheus-stack", "58.0.1", "unchanged"),
        ("demo", "0.2.0", "vendored"),
        ("extra", "1.0.0", "vendored"),
    ]
    assert requested(server) == Counter({"/index.yaml": 1, "/demo-0.2.0.tgz": 1, "/extra-1.0.0.tgz": 1})
    lock = VersionsLock.load(synced_project.lock_file)
    assert lock.get("demo").digest == repo.chart("demo", "0.2.0").digest
    assert lock.get("demo").url == f"{server.url}/demo-0.2.0.tgz"
    assert lock.get("extra").digest == repo.chart("extra", "1.0.0").digest


def test_a_noop_sync_touches_nothing(synced_project: RepoLayout, mirror: Path, serve: Serve) -> None:
    server = serve(mirror)
    before = snapshot(synced_project.root)
    inodes = {name: synced_project.external_dir.joinpath(d).stat().st_ino for name, d in VENDORED.items()}
    lock_mtime = synced_project.lock_file.stat().st_mtime_ns

    done = ChartVendor(synced_project, fast_fetcher(server.url)).sync()

    assert results(done) == [
        ("csi-driver-nfs", "v4.9.0", "unchanged"),
        ("gpu-operator", "v25.3.4", "unchanged"),
        ("harbor", "1.14.2", "unchanged"),
        ("ingress-nginx", "4.11.3", "unchanged"),
        ("kube-prometheus-stack", "58.0.1", "unchanged"),
    ]
    assert snapshot(synced_project.root) == before
    assert server.faults.requests == []
    assert {name: synced_project.external_dir.joinpath(d).stat().st_ino for name, d in VENDORED.items()} == inodes
    assert synced_project.lock_file.stat().st_mtime_ns == lock_mtime
    assert [p.name for p in synced_project.external_dir.iterdir() if p.name.startswith(".")] == []


def test_sync_of_named_charts_only_touches_those(project: RepoLayout, mirror: Path) -> None:
    done = ChartVendor(project, fast_fetcher(mirror)).sync(["harbor"])
    assert results(done) == [("harbor", "1.14.2", "vendored")]
    assert [p.name for p in project.external_dir.iterdir()] == ["harbor-1.14.2"]

    with pytest.raises(InputError, match=r"not in versions\.lock: nope, other \(add with `inv charts\.add NAME --repo URL --version V`\)$"):
        ChartVendor(project, fast_fetcher(mirror)).sync(["nope", "harbor", "other"])


def test_a_version_change_vendors_the_new_one_and_prunes_the_old(synced_project: RepoLayout, mirror: Path) -> None:
    old = VersionsLock.load(synced_project.lock_file).get("harbor")
    synced_project.lock_file.write_text(
        COMMITTED_LOCK.replace("    version: 1.14.2\n", "    version: 1.14.3\n")
        .replace(f"    url: {old.url}\n", "")
        .replace(f"    digest: {old.digest}\n", "")
        .replace(f"    tree: {old.tree}\n", "")
    )

    done = ChartVendor(synced_project, fast_fetcher(mirror)).sync()

    assert ("harbor", "1.14.3", "vendored") in results(done)
    assert ("harbor", "1.14.2", "pruned") in results(done)
    folder = synced_project.chart_dir("harbor", "1.14.3")
    assert not synced_project.chart_dir("harbor", "1.14.2").exists()
    assert synced_project.lock_file.read_text() == COMMITTED_LOCK.replace("1.14.2", "1.14.3").replace(
        old.digest, index_digest(mirror, "harbor", "1.14.3")
    ).replace(old.tree, reference_tree_digest(folder))
    assert ChartVendor(synced_project, fast_fetcher(mirror)).verify() == []


# --- failures leave the repository as it was --------------------------------------------------


def test_a_tampered_archive_fails_naming_the_chart_and_changes_nothing(
    synced_project: RepoLayout, mirror: Path, serve: Serve
) -> None:
    server = serve(mirror)
    server.faults.replace[ARCHIVES["harbor"]] = (mirror / "helm.goharbor.io/harbor-1.14.1.tgz").read_bytes()
    values = synced_project.chart_dir("harbor", "1.14.2") / "values.yaml"
    values.write_text(values.read_text() + "# local edit\n")  # so sync must re-vendor harbor
    before = snapshot(synced_project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(synced_project, fast_fetcher(server.url)).sync()

    message = str(caught.value)
    tampered = sha256((mirror / "helm.goharbor.io/harbor-1.14.1.tgz").read_bytes())
    assert message.startswith("harbor 1.14.2: archive https://helm.goharbor.io/harbor-1.14.2.tgz has sha256 ")
    assert f"has sha256 {tampered[7:]}, expected d4f08296ab0eb8bc" in message
    assert "(tampered or truncated download)" in message
    assert message.endswith("nothing was changed (charts/external and the lock are as before)")
    assert snapshot(synced_project.root) == before


def test_a_tar_slip_archive_fails_naming_the_chart_and_changes_nothing(
    synced_project: RepoLayout, tmp_path: Path, serve: Serve
) -> None:
    # Deep enough to land in the project root if it were extracted naively.
    evil = tar_slip_tgz("evil", "0.1.0", escape="../../../../../../escaped.txt")
    server = serve(write_repo(tmp_path / "evil-site", [RepoChart("evil", "0.1.0", evil)]).root)
    synced_project.lock_file.write_text(COMMITTED_LOCK + f"  evil:\n    repository: {server.url}\n    version: 0.1.0\n")
    before = snapshot(synced_project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(synced_project, fast_fetcher()).sync()

    assert str(caught.value) == (
        f"evil 0.1.0: {server.url}/evil-0.1.0.tgz: refused entry 'evil/templates/../../../../../../escaped.txt' "
        "('..' in path); nothing was changed (charts/external and the lock are as before)"
    )
    assert snapshot(synced_project.root) == before
    assert not (tmp_path / "escaped.txt").exists()


def test_a_truncated_download_fails_naming_the_chart_and_changes_nothing(
    project: RepoLayout, mirror: Path, serve: Serve
) -> None:
    server = serve(mirror)
    server.faults.truncate[ARCHIVES["csi-driver-nfs"]] = 2000
    before = snapshot(project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(project, fast_fetcher(server.url, retries=1)).sync()

    message = str(caught.value)
    assert message.startswith(f"csi-driver-nfs: {server.url}{ARCHIVES['csi-driver-nfs']}: truncated download")
    assert "(after 2 attempts)" in message
    assert message.endswith("nothing was changed (charts/external and the lock are as before)")
    assert requested(server)[ARCHIVES["csi-driver-nfs"]] == 2
    assert snapshot(project.root) == before
    assert [p.name for p in project.external_dir.iterdir()] == []


def test_transient_503s_are_retried(project: RepoLayout, mirror: Path, serve: Serve) -> None:
    server = serve(mirror)
    server.faults.fail_first[ARCHIVES["gpu-operator"]] = 2
    server.faults.fail_first[INDEXES["harbor"]] = 1
    project.lock_file.write_text(strip_pins(COMMITTED_LOCK))

    done = ChartVendor(project, fast_fetcher(server.url)).sync()

    assert [r.action for r in done] == ["vendored"] * len(VENDORED)
    assert requested(server)[ARCHIVES["gpu-operator"]] == 3
    assert requested(server)[INDEXES["harbor"]] == 2
    assert project.lock_file.read_text() == COMMITTED_LOCK


def test_a_persistent_503_gives_up_naming_the_chart(project: RepoLayout, mirror: Path, serve: Serve) -> None:
    server = serve(mirror)
    server.faults.fail_first[ARCHIVES["harbor"]] = 100
    before = snapshot(project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(project, fast_fetcher(server.url, retries=2)).sync()

    assert str(caught.value).startswith(f"harbor: {server.url}{ARCHIVES['harbor']}: HTTP 503 (after 3 attempts)")
    assert requested(server)[ARCHIVES["harbor"]] == 3
    assert snapshot(project.root) == before


def test_a_missing_archive_is_a_clear_error(project: RepoLayout, mirror: Path, serve: Serve) -> None:
    server = serve(mirror)
    project.lock_file.write_text(COMMITTED_LOCK.replace("harbor-1.14.2.tgz", "harbor-9.9.9.tgz"))
    before = snapshot(project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(project, fast_fetcher(server.url)).sync()

    assert str(caught.value) == (
        f"harbor: {server.url}/helm.goharbor.io/harbor-9.9.9.tgz: HTTP 404; "
        "nothing was changed (charts/external and the lock are as before)"
    )
    assert snapshot(project.root) == before


# --- verify -----------------------------------------------------------------------------------


def test_verify_catches_a_hand_edit_and_sync_restores_it(synced_project: RepoLayout, mirror: Path) -> None:
    vendor = ChartVendor(synced_project, fast_fetcher(mirror))
    assert vendor.verify() == []
    values = synced_project.chart_dir("harbor", "1.14.2") / "values.yaml"
    original = values.read_bytes()
    values.write_bytes(original + b"extraKey: true\n")

    problems = vendor.verify()

    assert [(p.file, p.line, p.key, p.message) for p in problems] == [
        (
            "charts/versions.lock",
            lock_line(synced_project, "harbor"),
            "harbor",
            "charts/external/harbor-1.14.2 differs from the lock's content digest "
            "(a hand edit of a vendored chart, or a stale lock)",
        )
    ]
    assert problems[0].fix.startswith("run `inv charts.sync --name harbor`")
    failed = inv(synced_project.root, "charts.verify")
    assert failed.returncode == 1
    assert f"{format_diagnostic(problems[0])}\n" in failed.stdout
    assert f"charts/versions.lock:{lock_line(synced_project, 'harbor')}: harbor: charts/external/harbor-1.14.2 differs" in (
        failed.stdout
    )
    assert "error: charts.verify found 1 problem(s)" in failed.stderr

    assert results(vendor.sync()) == [
        ("csi-driver-nfs", "v4.9.0", "unchanged"),
        ("gpu-operator", "v25.3.4", "unchanged"),
        ("harbor", "1.14.2", "vendored"),
        ("ingress-nginx", "4.11.3", "unchanged"),
        ("kube-prometheus-stack", "58.0.1", "unchanged"),
    ]
    assert values.read_bytes() == original
    assert synced_project.lock_file.read_text() == COMMITTED_LOCK
    assert vendor.verify() == []
    passed = inv(synced_project.root, "charts.verify")
    assert passed.returncode == 0, passed.stderr
    assert "charts.verify: vendored charts, lock and releases agree" in passed.stdout


def lock_line(layout: RepoLayout, chart: str) -> int:
    """The line of the chart's entry in the lock, counted from the text."""
    return layout.lock_file.read_text().splitlines().index(f"  {chart}:") + 1


def test_verify_reports_missing_and_extra_folders(synced_project: RepoLayout) -> None:
    shutil.rmtree(synced_project.chart_dir("gpu-operator", "v25.3.4"))
    (synced_project.external_dir / "nginx-1.0.0" / "templates").mkdir(parents=True)
    (synced_project.external_dir / ".sync.leftover.staging").mkdir()  # hidden folders are ours

    problems = ChartVendor(synced_project, Fetcher()).verify()

    assert problems == [
        Diagnostic(
            "charts/versions.lock",
            lock_line(synced_project, "gpu-operator"),
            "gpu-operator",
            "error",
            "charts/external/gpu-operator-v25.3.4 is missing",
            "run `inv charts.sync --name gpu-operator`",
        ),
        Diagnostic(
            "charts/external/nginx-1.0.0",
            None,
            "",
            "error",
            "a vendored folder that is not in the lock",
            "delete the folder, or lock the chart with `inv charts.add NAME --repo URL --version V`",
        ),
    ]


def test_verify_reports_an_old_version_left_beside_the_locked_one(synced_project: RepoLayout) -> None:
    shutil.copytree(synced_project.chart_dir("harbor", "1.14.2"), synced_project.chart_dir("harbor", "1.14.1"))
    problems = ChartVendor(synced_project, Fetcher()).verify()
    assert [(p.file, p.message) for p in problems] == [
        ("charts/external/harbor-1.14.1", "a vendored folder that is not in the lock")
    ]


def test_verify_reports_releases_outside_the_lock(synced_project: RepoLayout) -> None:
    tier = synced_project.releases_dir / "applications.yaml.gotmpl"
    tier.write_text(
        tier.read_text()
        + '\n- name: web\n  namespace: web\n  chart: {{ index .Charts "nginx" }}\n'
        + "\n- name: cache\n  namespace: cache\n  chart: bitnami/redis\n"
        + "\n- name: broken\n  namespace: broken\n  chart: ../charts/custom/nothing-here\n"
    )

    problems = ChartVendor(synced_project, Fetcher()).verify()

    where = "helmfile/releases/applications.yaml.gotmpl"
    lines = tier.read_text().splitlines()
    assert [(p.file, p.line, p.key, p.message) for p in problems] == [
        (where, lines.index("- name: web") + 1, "release web", "chart 'nginx' is not in the lock"),
        (where, lines.index("- name: cache") + 1, "release cache", "chart bitnami/redis does not go through the lock"),
        (where, lines.index("- name: broken") + 1, "release broken", "../charts/custom/nothing-here has no Chart.yaml"),
    ]
    assert problems[0].fix == "lock it with `inv charts.add nginx --repo URL --version V`"


def test_verify_reports_an_incomplete_entry_and_an_unlocked_release(synced_project: RepoLayout) -> None:
    # harbor's entry loses its pins; csi-driver-nfs leaves the lock while its release stays.
    lock = VersionsLock.load(synced_project.lock_file)
    csi = lock.get("csi-driver-nfs")
    harbor = lock.get("harbor")
    synced_project.lock_file.write_text(
        COMMITTED_LOCK.replace(f"    url: {harbor.url}\n", "").replace(
            "  csi-driver-nfs:\n"
            f"    repository: {csi.repository}\n    version: {csi.version}\n    url: {csi.url}\n"
            f"    digest: {csi.digest}\n    tree: {csi.tree}\n",
            "",
        )
    )

    problems = ChartVendor(synced_project, Fetcher()).verify()

    assert [(p.file, p.key, p.message) for p in problems] == [
        ("charts/versions.lock", "harbor", "lock entry for 1.14.2 is incomplete (no url/digest/tree)"),
        ("charts/external/csi-driver-nfs-v4.9.0", "", "a vendored folder that is not in the lock"),
        # The tier file's `required` guard stops helmfile; verify reports helmfile's words.
        (
            "helmfile/helmfile.yaml.gotmpl",
            "releases",
            "helmfile cannot list the releases: csi-driver-nfs is not in charts/versions.lock",
        ),
    ]


def test_verify_reports_an_unreadable_lock(synced_project: RepoLayout) -> None:
    synced_project.lock_file.write_text("charts:\n  harbor: [1.14.2\n")
    problems = ChartVendor(synced_project, Fetcher()).verify()
    assert len(problems) == 1
    # The parser notices the unclosed `[` where the stream ends, after the line that opens it.
    assert (problems[0].file, problems[0].line) == ("charts/versions.lock", 3)
    assert problems[0].message.startswith("not valid YAML: ")


# --- outdated ---------------------------------------------------------------------------------

EXPECTED_OUTDATED = [
    OutdatedRow(
        "csi-driver-nfs",
        "v4.9.0",
        "4.13.4",
        "4.13.4",
        "minor",
        "https://raw.githubusercontent.com/kubernetes-csi/csi-driver-nfs/master/charts",
    ),
    OutdatedRow("gpu-operator", "v25.3.4", "v26.7.0", "v25.10.1", "major", "https://nvidia.github.io/gpu-operator"),
    OutdatedRow("harbor", "1.14.2", "1.19.1", "1.19.1", "minor", "https://helm.goharbor.io"),
    OutdatedRow("ingress-nginx", "4.11.3", "4.11.3", "4.11.3", "none", "https://kubernetes.github.io/ingress-nginx"),
    OutdatedRow(
        "kube-prometheus-stack",
        "58.0.1",
        "69.8.2",
        "58.0.1",
        "major",
        "https://prometheus-community.github.io/helm-charts",
    ),
]


def test_outdated_orders_by_semver_across_the_v_prefix(project: RepoLayout, mirror: Path, serve: Serve) -> None:
    server = serve(mirror)
    vendor = ChartVendor(project, fast_fetcher(server.url))

    assert vendor.outdated() == EXPECTED_OUTDATED
    assert requested(server) == Counter(dict.fromkeys(INDEXES.values(), 1))


def test_outdated_json_through_invoke(project: RepoLayout, mirror: Path) -> None:
    done = inv(project.root, "charts.outdated", "--json", CHARTS_MIRROR=str(mirror))

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [row.as_json() for row in EXPECTED_OUTDATED]
    gpu = next(row for row in json.loads(done.stdout) if row["name"] == "gpu-operator")
    assert gpu["newest"].startswith("v26.")


def test_outdated_table_through_invoke(project: RepoLayout, mirror: Path) -> None:
    done = inv(project.root, "charts.outdated", "--mirror", str(mirror))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["chart", "locked", "newest", "same", "major", "distance"]
    assert lines[2].split() == ["gpu-operator", "v25.3.4", "v26.7.0", "v25.10.1", "major"]


# --- add --------------------------------------------------------------------------------------


def added_block(chart: LockedChart) -> str:
    return (
        f"  {chart.name}:\n"
        f"    repository: {chart.repository}\n"
        f"    version: {chart.version}\n"
        f"    url: {chart.url}\n"
        f"    digest: {chart.digest}\n"
        f"    tree: {chart.tree}\n"
    )


@pytest.mark.parametrize("urls", ["relative", "absolute"])
def test_add_vendors_and_locks_a_chart(project: RepoLayout, tmp_path: Path, serve: Serve, urls: str) -> None:
    site = tmp_path / "site"
    site.mkdir()
    server = serve(site)
    repo = demo_repo(site / "stable", absolute_base=f"{server.url}/stable" if urls == "absolute" else None)
    payload = repo.chart("demo", "0.1.0").payload

    chart = ChartVendor(project, fast_fetcher()).add("demo", f"{server.url}/stable/", "0.1.0")

    folder = project.chart_dir("demo", "0.1.0")
    assert chart == LockedChart(
        name="demo",
        repository=f"{server.url}/stable",
        version="0.1.0",
        url=f"{server.url}/stable/demo-0.1.0.tgz",
        digest=sha256(payload),
        tree=reference_tree_digest(folder),
    )
    assert project.lock_file.read_text() == COMMITTED_LOCK + added_block(chart)
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "Chart.yaml",
        "crds",
        "crds/widgets.yaml",
        "templates",
        "templates/configmap.yaml",
        "values.yaml",
    ]
    assert requested(server) == Counter({"/stable/index.yaml": 1, "/stable/demo-0.1.0.tgz": 1})
    assert [p.name for p in project.external_dir.iterdir()] == ["demo-0.1.0"]


def test_add_refuses_a_locked_name(project: RepoLayout, serve: Serve, tmp_path: Path) -> None:
    server = serve(demo_repo(tmp_path / "site").root)
    before = snapshot(project.root)

    with pytest.raises(InputError) as caught:
        ChartVendor(project, fast_fetcher()).add("harbor", server.url, "1.14.3")

    assert str(caught.value) == "harbor is already locked at 1.14.2; use `inv charts.upgrade harbor` to change it"
    assert server.faults.requests == []
    assert snapshot(project.root) == before


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [
        ("demo", "9.9.9", "demo 9.9.9 is not in the repository index {url}"),
        ("demo", "v0.1.0", "demo v0.1.0 is not in the repository index {url} (the index spells it '0.1.0')"),
        ("ghost", "0.1.0", "chart 'ghost' is not in the repository index {url}"),
    ],
)
def test_add_refuses_what_the_index_does_not_list(
    project: RepoLayout, serve: Serve, tmp_path: Path, name: str, version: str, message: str
) -> None:
    server = serve(demo_repo(tmp_path / "site").root)
    before = snapshot(project.root)

    with pytest.raises(FetchError) as caught:
        ChartVendor(project, fast_fetcher()).add(name, server.url, version)

    assert str(caught.value) == message.format(url=server.url)
    assert snapshot(project.root) == before


def test_add_refuses_an_archive_that_does_not_match_the_index(
    project: RepoLayout, serve: Serve, tmp_path: Path
) -> None:
    payload = chart_tgz("demo", "0.1.0")
    claimed = sha256(chart_tgz("demo", "0.1.0", greeting="original"))
    server = serve(write_repo(tmp_path / "site", [RepoChart("demo", "0.1.0", payload, index_digest=claimed)]).root)
    before = snapshot(project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(project, fast_fetcher()).add("demo", server.url, "0.1.0")

    assert str(caught.value).startswith(
        f"demo 0.1.0: archive {server.url}/demo-0.1.0.tgz has sha256 {sha256(payload)[7:]}, expected {claimed[7:]}"
    )
    assert snapshot(project.root) == before
    assert list(project.external_dir.iterdir()) == []


class _GzipLabelled(http.server.SimpleHTTPRequestHandler):
    """A static server that labels its .tgz files `Content-Encoding: gzip` (seen on misconfigured
    web servers and object stores): the bytes sent are the archive itself."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def end_headers(self) -> None:
        if self.path.endswith(".tgz"):
            self.send_header("Content-Encoding", "gzip")
        super().end_headers()


def test_an_archive_labelled_gzip_encoded_is_vendored_by_its_raw_digest(project: RepoLayout, tmp_path: Path) -> None:
    # Decoding the label would hand over the inner tar, whose sha256 is not the index's.
    site = demo_repo(tmp_path / "site").root
    with loopback(functools.partial(_GzipLabelled, directory=str(site))) as url:
        chart = ChartVendor(project, fast_fetcher()).add("demo", url, "0.1.0")

    assert chart.digest == sha256((site / "demo-0.1.0.tgz").read_bytes())
    assert (project.chart_dir("demo", "0.1.0") / "Chart.yaml").is_file()


def test_add_refuses_an_archive_replaced_in_transit(project: RepoLayout, serve: Serve, tmp_path: Path) -> None:
    server = serve(demo_repo(tmp_path / "site").root)
    server.faults.replace["/demo-0.1.0.tgz"] = chart_tgz("demo", "0.1.0", greeting="evil")
    before = snapshot(project.root)

    with pytest.raises(AstragoError, match=r"^demo 0\.1\.0: archive .* \(tampered or truncated download\)"):
        ChartVendor(project, fast_fetcher()).add("demo", server.url, "0.1.0")
    assert snapshot(project.root) == before


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (chart_tgz("other", "0.1.0"), "demo 0.1.0: the archive holds chart 'other', not 'demo'"),
        (chart_tgz("demo", "0.1.1"), "demo 0.1.0: the archive holds version 0.1.1, not 0.1.0"),
        (
            tar_slip_tgz("demo", "0.1.0"),
            "demo 0.1.0: {url}/demo-0.1.0.tgz: refused entry 'demo/templates/../../../escaped.txt'",
        ),
    ],
)
def test_add_refuses_an_archive_that_is_not_the_chart(
    project: RepoLayout, serve: Serve, tmp_path: Path, payload: bytes, message: str
) -> None:
    server = serve(write_repo(tmp_path / "site", [RepoChart("demo", "0.1.0", payload)]).root)
    before = snapshot(project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(project, fast_fetcher()).add("demo", server.url, "0.1.0")

    assert str(caught.value).startswith(message.format(url=server.url))
    assert snapshot(project.root) == before


@pytest.mark.parametrize(
    ("name", "repository", "message"),
    [
        ("Demo", "https://charts.example.com", "invalid chart name 'Demo'"),
        ("demo", "charts.example.com", "invalid --repo 'charts.example.com'"),
        ("demo", "ftp://charts.example.com", "invalid --repo 'ftp://charts.example.com'"),
    ],
)
def test_add_refuses_bad_input(project: RepoLayout, name: str, repository: str, message: str) -> None:
    before = snapshot(project.root)
    with pytest.raises(InputError, match=re.escape(message)):
        ChartVendor(project, Fetcher()).add(name, repository, "1.0.0")
    assert snapshot(project.root) == before


def test_add_with_a_release_through_invoke_renders_with_helmfile(
    synced_project: RepoLayout, serve: Serve, tmp_path: Path
) -> None:
    server = serve(demo_repo(tmp_path / "site").root)
    root = synced_project.root
    tier = root / "helmfile/releases/monitoring.yaml.gotmpl"
    base_values = root / "environments/base/values.yaml"
    tier_before, values_before = tier.read_text(), base_values.read_text()

    done = inv(
        root,
        "charts.add",
        "--name", "demo", "--repo", server.url, "--version", "0.2.0",
        "--release", "demo-web", "--tier", "monitoring",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    chart = VersionsLock.load(synced_project.lock_file).get("demo")
    assert f"locked and vendored demo 0.2.0 ({chart.digest})" in done.stdout
    assert synced_project.lock_file.read_text() == COMMITTED_LOCK + added_block(chart)
    # Appended as a block, nothing else in the tier file touched.
    block = scaffold.release_block("demo-web", "demo", "demo-web", "monitoring")
    assert tier.read_text() == tier_before + block
    for line in (
        "- name: demo-web",
        "  namespace: demo-web",
        '  chart: {{ index .Charts "demo" | required "demo is not in charts/versions.lock" }}',
        '  installed: {{ index .Values.releases "demo-web" "enabled" }}',
        "  labels: {tier: monitoring, app: demo-web}",
    ):
        assert line in block.splitlines()
    assert base_values.read_text() == values_before + "  demo-web: {enabled: true}\n"
    assert (root / "environments/base/releases/demo-web.yaml").read_text() == (
        "# Chart values for release demo-web in every environment (chart demo).\n"
        "# Per environment: environments/<env>/releases/demo-web.yaml. No secrets here.\n"
    )
    assert ChartVendor(synced_project, Fetcher()).verify() == []

    # The helmfile runs every release through ../scripts/post-render (with this checkout's venv).
    if (PROJECT / "scripts" / "post-render").exists() and not (root / "scripts").exists():
        (root / "scripts").symlink_to(PROJECT / "scripts")
    state = tmp_path / "helm-state"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HELM")},
        "HELMFILE_UPGRADE_NOTICE_DISABLED": "true",
        "HELM_CONFIG_HOME": str(state / "config"),
        "HELM_CACHE_HOME": str(state / "cache"),
        "HELM_DATA_HOME": str(state / "data"),
        "HELM_PLUGINS": str(state / "plugins"),
        "TMPDIR": str(tmp_path),
        "ASTRAGO_PYTHON": str(PROJECT / ".venv" / "bin" / "python"),
    }
    rendered = subprocess.run(
        [
            str(PROJECT / ".tools/bin/helmfile"),
            "--helm-binary", str(PROJECT / ".tools/bin/helm"),
            "-f", "helmfile/helmfile.yaml.gotmpl",
            "-e", "dev", "-l", "name=demo-web",
            "template", "--skip-deps",
        ],
        cwd=root, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    # (crds/ is installed by helm itself; `template` prints it only with --include-crds.)
    assert kinds - {("CustomResourceDefinition", "widgets.example.com")} == {("ConfigMap", "demo-web-settings")}
    configmap = next(d for d in docs if d["kind"] == "ConfigMap")
    assert configmap["data"] == {"greeting": "bonjour", "chart": "demo-0.2.0"}
    assert configmap["metadata"]["namespace"] == "demo-web"


def test_add_with_a_bad_release_through_invoke_changes_nothing(
    synced_project: RepoLayout, serve: Serve, tmp_path: Path
) -> None:
    server = serve(demo_repo(tmp_path / "site").root)
    before = snapshot(synced_project.root)

    done = inv(
        synced_project.root,
        "charts.add", "--name", "demo", "--repo", server.url, "--version", "0.2.0",
        "--release", "harbor", "--tier", "monitoring",
    )  # fmt: skip

    assert done.returncode == 1
    assert "error: release 'harbor' already exists in helmfile/releases/" in done.stderr
    assert server.faults.requests == []
    assert snapshot(synced_project.root) == before


# --- credentials ------------------------------------------------------------------------------


def test_credentials_from_the_environment_are_sent_and_never_shown(
    project: RepoLayout, serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = demo_repo(tmp_path / "site")
    # The index also lists a version whose archive is missing: a fetch that fails.
    write_repo(repo.root, [*repo.charts, RepoChart("demo", "0.3.0", chart_tgz("demo", "0.3.0"), write_file=False)])
    server = serve(repo.root)
    other = serve(demo_repo(tmp_path / "other-site").root)
    host_key = server.url.removeprefix("http://").replace(".", "_").replace(":", "_")
    user, password = "robot$deployer", "s3cr3t-Pa55w0rd"
    monkeypatch.setenv(f"ASTRAGO_REPO_{host_key}_USERNAME", user)
    monkeypatch.setenv(f"ASTRAGO_REPO_{host_key}_PASSWORD", password)
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    before = snapshot(project.root)

    with pytest.raises(AstragoError) as caught:
        ChartVendor(project, fast_fetcher(retries=0)).add("demo", server.url, "0.3.0")

    assert str(caught.value).startswith(f"demo: {server.url}/demo-0.3.0.tgz: HTTP 404")
    assert password not in str(caught.value) and user not in str(caught.value)
    assert snapshot(project.root) == before

    ChartVendor(project, fast_fetcher()).add("demo", server.url, "0.1.0")
    ChartVendor(project, fast_fetcher()).add("extra", other.url, "1.0.0")

    assert [path for path, _ in server.faults.requests] == [
        "/index.yaml", "/demo-0.3.0.tgz", "/index.yaml", "/demo-0.1.0.tgz"
    ]  # fmt: skip
    assert [headers.get("Authorization") for _, headers in server.faults.requests] == [expected] * 4
    # Credentials go to their own host only.
    assert [headers.get("Authorization") for _, headers in other.faults.requests] == [None, None]
    text = project.lock_file.read_text()
    assert password not in text and user not in text
    assert text.startswith(COMMITTED_LOCK)


@pytest.mark.parametrize(
    "repository", ["https://bob:hunter2@charts.example.com/stable", "oci://bob:hunter2@registry.example.com/charts"]
)
def test_add_refuses_credentials_in_the_repository_url(project: RepoLayout, repository: str) -> None:
    before = snapshot(project.root)

    with pytest.raises(InputError) as caught:
        ChartVendor(project, Fetcher()).add("demo", repository, "1.0.0")

    shown = repository.replace("bob:hunter2@", "")
    assert str(caught.value) == (
        f"--repo {shown} must not carry user:password; "
        "set ASTRAGO_REPO_<HOST>_USERNAME and ASTRAGO_REPO_<HOST>_PASSWORD instead"
    )
    assert snapshot(project.root) == before


# --- concurrent runs --------------------------------------------------------------------------


def test_a_second_run_fails_cleanly_while_the_first_holds_the_lock(
    project: RepoLayout, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASTRAGO_LOCK_WAIT", "0.2")
    before = snapshot(project.root)

    with charts_lock_held(project.root, purpose="charts.sync") as pid:
        with pytest.raises(AstragoError) as caught:
            ChartVendor(project, fast_fetcher(mirror)).sync()
        with pytest.raises(AstragoError):
            ChartVendor(project, fast_fetcher(mirror)).add("demo", "https://charts.example.com", "1.0.0")

    assert str(caught.value) == (
        f"charts/external is in use by charts.sync (pid {pid}) (.cache/charts.lock); gave up after 0.2s: "
        "try again when it ends, or wait longer with ASTRAGO_LOCK_WAIT=SECONDS"
    )
    assert snapshot(project.root) == before
    assert [r.action for r in ChartVendor(project, fast_fetcher(mirror)).sync()] == ["vendored"] * len(VENDORED)


def test_a_second_run_waits_for_the_first(project: RepoLayout, mirror: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k not in ("CHARTS_MIRROR", "ASTRAGO_ROOT")}
    environ.update({"ASTRAGO_ROOT": str(project.root), "NO_COLOR": "1", "CHARTS_MIRROR": str(mirror)})
    with charts_lock_held(project.root, purpose="charts.add") as pid:
        second = subprocess.Popen(
            [*INV, "charts.sync"], cwd=project.root, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        # It says what it waits for; until the holder lets go it cannot have started.
        said = read_until(second.stderr, "waiting for")
        assert said.splitlines()[-1] == f"charts.sync: waiting for charts.add (pid {pid}) to finish..."
        assert list(project.external_dir.iterdir()) == []
    out, err = second.communicate(timeout=120)

    assert second.returncode == 0, err
    assert [line.split()[-1] for line in out.splitlines()] == ["vendored"] * len(VENDORED)


def test_a_run_in_another_process_is_kept_out(synced_project: RepoLayout, mirror: Path) -> None:
    values = synced_project.chart_dir("harbor", "1.14.2") / "values.yaml"
    values.write_text(values.read_text() + "# edit\n")
    before = snapshot(synced_project.root)

    with charts_lock_held(synced_project.root, purpose="charts.sync") as pid:
        blocked = inv(synced_project.root, "charts.sync", CHARTS_MIRROR=str(mirror), ASTRAGO_LOCK_WAIT="0.2")

    assert blocked.returncode == 1
    assert blocked.stderr.splitlines()[-1] == (
        f"error: charts/external is in use by charts.sync (pid {pid}) (.cache/charts.lock); gave up after 0.2s: "
        "try again when it ends, or wait longer with ASTRAGO_LOCK_WAIT=SECONDS"
    )
    assert snapshot(synced_project.root) == before


def test_one_version_order_for_index_entries_and_oci_tags() -> None:
    tags = ["1.0.0", "v1.2.0", "1.10.0-rc.1", "latest", "1.9.0", "v2.0.0-beta.1", "0.9", "v1.9.0"]
    assert newest_first(tags, str) == ["1.9.0", "v1.9.0", "v1.2.0", "1.0.0", "0.9"]
    assert newest_first(tags, str, prereleases=True)[:3] == ["v2.0.0-beta.1", "1.10.0-rc.1", "1.9.0"]
    # Equal versions spelled two ways: the first as given wins, whichever way it is spelled.
    assert newest(tags, str) == "1.9.0" and newest(list(reversed(tags)), str) == "v1.9.0"
    assert newest(tags, str, major=0) == "0.9" and newest(tags, str, major=3) is None
    assert newest(["latest", "main"], str) is None
