"""Snapshots: the whole render of one environment and one upgrade report, compared with the
files under tests/__snapshots__/ so that any change to what the suite produces shows as a diff.

A change that is meant: `pytest tests/test_snapshots.py --snapshot-update`, then review and
commit the snapshot diff with the change. The snapshots hold nothing that differs between
machines or runs: Secret data and `checksum/*` annotations are normalized by the renderer (harbor
generates new secrets each render), and the upgrade's loopback URL and temporary paths are
replaced by fixed names. Each test makes its output twice and requires both to be identical, so
a source of nondeterminism fails here before it can make the snapshot flaky.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from syrupy.assertion import SnapshotAssertion

from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools
from astrago_deploy.upgrade.plan import UpgradeOptions
from astrago_deploy.upgrade.upgrader import Upgrader

from .conftest import HttpServer, git
from .test_upgrade import Serve, copy_synced, demo_site, inv, set_git_identity


def render_env(layout: RepoLayout, env: str, out: Path) -> dict[str, str]:
    """Every release file of `env`, rendered without the cache into `out`."""
    [selected] = [e for e in environments.discover(layout) if e.name == env]
    Renderer(layout, PinnedTools(layout), out, use_cache=False).render([selected])
    return {path.name: path.read_text(encoding="utf-8") for path in sorted((out / env).glob("*.yaml"))}


def test_the_dev_render(synced_project: RepoLayout, tmp_path: Path, snapshot: SnapshotAssertion) -> None:
    first = render_env(synced_project, "dev", tmp_path / "first")
    second = render_env(synced_project, "dev", tmp_path / "second")
    assert first == second
    assert "harbor.yaml" in first
    assert not [name for name, text in first.items() if str(tmp_path) in text or str(synced_project.root) in text]
    assert first == snapshot


def upgrade_demo(layout: RepoLayout, server: HttpServer, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """demo 1.0.0 -> 2.0.0 on `layout` (the fixture upgrade of test_upgrade): the markdown report."""
    root = layout.root
    added = inv(
        root, "charts.add", "demo", "--repo", server.url, "--version", "1.0.0", "--release", "demo",
        "--tier", "applications",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    (root / "environments/dev/releases/demo.yaml").write_text("# dev keeps the legacy mode off.\nlegacy:\n  enabled: false\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "add demo 1.0.0")
    set_git_identity(monkeypatch, home)
    result = Upgrader(layout, Fetcher(backoff=0.0), environ={}).run(UpgradeOptions("demo", to="2.0.0", open_pr=False))
    if result is None:
        raise AstragoError("the upgrade found nothing to do")
    markdown = git(root, "show", f"{result.branch}:reports/upgrades/demo-1.0.0-to-2.0.0.md")
    # What differs between runs and machines: the loopback port and the temporary folders.
    return markdown.replace(server.url, "http://127.0.0.1:PORT").replace(str(root), "<checkout>")


def test_an_upgrade_report(
    synced_template: RepoLayout, serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    snapshot: SnapshotAssertion,
) -> None:  # fmt: skip
    server = serve(demo_site(tmp_path / "site"))
    reports = [
        upgrade_demo(copy_synced(synced_template, tmp_path / run / "repo"), server, tmp_path / run, monkeypatch)
        for run in ("first", "second")
    ]
    assert reports[0] == reports[1]
    assert str(tmp_path) not in reports[0]
    assert reports[0] == snapshot
