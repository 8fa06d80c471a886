"""`inv charts.upgrade`: a chart bump on its own branch, with an impact report and a pull request.

Everything runs for real: git repositories in temporary folders (copies of the monorepo with
the charts vendored from the mirror, ../shared/upstream), the pinned helm/helmfile/kubectl on
the real charts, fixture charts served by a loopback Helm repository, and a fake GitHub API on
loopback. The checkout the upgrade runs from must never change: on success the new branch
holds one commit; on a refusal, a failure or an interrupt there is no branch at all (it is
created last, expecting it absent), and what a killed run left the next run prunes.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from astrago_deploy.charts.index import bump_kind
from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.upgrade.plan import UpgradeOptions, resolve_target
from astrago_deploy.upgrade.report import GITHUB_BODY_LIMIT, AffectedOverride
from astrago_deploy.upgrade.upgrader import Upgrader

from .chart_fixtures import CONFIGMAP, Entry, RepoChart, chart_yaml, reference_tree_digest, tar_bytes, write_repo
from .conftest import GIT_ENV, PROJECT, HttpServer, git, loopback, snapshot

Serve = Callable[[Path], HttpServer]

INV = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT)]
GPU_INDEX = "nvidia.github.io/gpu-operator/index.yaml"
CSI_INDEX = "raw.githubusercontent.com/kubernetes-csi/csi-driver-nfs/master/charts/index.yaml"
HEALTH_PATCH = "patches/gpu-operator/nfd-master-health-port.yaml"
GC_PATCH = "patches/gpu-operator/nfd-gc-nodefeaturegroups-rule.yaml"
TOKEN = "ghp_test123"
REPORT_KEYS = {
    "chart", "from", "to", "bump", "risk", "values", "overrides_affected", "crds", "images", "resources",
    "patches", "changelog",
}  # fmt: skip
KPS_CRD_PLURALS = (
    "alertmanagerconfigs", "alertmanagers", "podmonitors", "probes", "prometheusagents", "prometheuses",
    "prometheusrules", "scrapeconfigs", "servicemonitors", "thanosrulers",
)  # fmt: skip
_STRIPPED = ("CHARTS_MIRROR", "ASTRAGO_ROOT", "GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_SERVER_URL", "ASTRAGO_DEBUG")


# --- helpers ----------------------------------------------------------------------------------


def cli_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of an `inv` run on `root`: a git identity, nothing leaking in from outside."""
    environ = {k: v for k, v in os.environ.items() if k not in _STRIPPED}
    environ.update(GIT_ENV)
    environ.update({"ASTRAGO_ROOT": str(root), "NO_COLOR": "1", "HOME": str(root.parent), **extra})
    return environ


def inv(root: Path, *args: str, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*INV, *args], cwd=root, env=cli_env(root, **env), capture_output=True, text=True, timeout=timeout
    )


def copy_synced(template: RepoLayout, dest: Path) -> RepoLayout:
    """What the `synced_project` fixture gives, for module-scoped fixtures."""
    shutil.copytree(template.root, dest, symlinks=True)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "initial")
    return RepoLayout.at(dest)


def branches(root: Path) -> list[str]:
    return git(root, "branch", "--list", "--format=%(refname:short)").split()


def worktrees(root: Path) -> list[str]:
    return [line for line in git(root, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


@dataclass(frozen=True)
class MainState:
    """What must not change in the checkout an upgrade runs from."""

    head: str
    branch: str
    status: str
    external: dict[str, bytes]
    files: dict[str, bytes]  # committed content (generated renders aside)
    worktrees: list[str]


def main_state(layout: RepoLayout) -> MainState:
    root = layout.root
    return MainState(
        git(root, "rev-parse", "HEAD").strip(),
        git(root, "rev-parse", "--abbrev-ref", "HEAD").strip(),
        git(root, "status", "--porcelain", "--untracked-files=all"),
        snapshot(layout.external_dir),
        {k: v for k, v in snapshot(root).items() if not k.startswith("rendered/")},
        worktrees(root),
    )


def assert_main_unchanged(layout: RepoLayout, before: MainState) -> None:
    after = main_state(layout)
    assert after.branch == before.branch == "main"
    assert after.head == before.head
    assert after.status == ""
    assert after.external.keys() == before.external.keys()
    assert after.external == before.external
    assert after.files == before.files
    assert after.worktrees == before.worktrees == [f"worktree {layout.root}"]


def index_entry(mirror: Path, index: str, name: str, version: str) -> dict[str, Any]:
    entries = yaml.safe_load((mirror / index).read_text())["entries"][name]
    (entry,) = [e for e in entries if e["version"] == version]
    return dict(entry)


def commit_files(root: Path, ref: str) -> list[str]:
    return sorted(git(root, "diff-tree", "--no-commit-id", "--name-only", "-r", ref).split())


def set_git_identity(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """In-process upgrades run git with os.environ: give it the test identity."""
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(home))
    for key in ("GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_SERVER_URL", "CHARTS_MIRROR"):
        monkeypatch.delenv(key, raising=False)


# --- 1. gpu-operator v25.3.4 -> v25.10.1 through the CLI (one run, several checks) ---------------


@dataclass
class CliUpgrade:
    layout: RepoLayout
    before: MainState
    lock_before: str
    json_file: Path
    proc: subprocess.CompletedProcess[str]
    branch: str = "chart/gpu-operator-v25.10.1"
    stem: str = "reports/upgrades/gpu-operator-v25.3.4-to-v25.10.1"

    def show(self, path: str) -> str:
        return git(self.layout.root, "show", f"{self.branch}:{path}")

    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.json_file.read_text())
        return data


@pytest.fixture(scope="module")
def gpu_minor(tmp_path_factory: pytest.TempPathFactory, synced_template: RepoLayout, mirror: Path) -> CliUpgrade:
    base = tmp_path_factory.mktemp("gpu-minor")
    layout = copy_synced(synced_template, base / "repo")
    before = main_state(layout)
    lock_before = layout.lock_file.read_text()
    json_file = base / "r.json"  # outside the checkout: inside, it would be an untracked file there
    proc = inv(
        layout.root,
        "charts.upgrade", "gpu-operator", "--to", "v25.10.1", "--no-pr", "--json", str(json_file),
        CHARTS_MIRROR=str(mirror),
    )  # fmt: skip
    return CliUpgrade(layout, before, lock_before, json_file, proc)


def test_gpu_minor_upgrade_succeeds_and_leaves_the_checkout_alone(gpu_minor: CliUpgrade) -> None:
    assert gpu_minor.proc.returncode == 0, gpu_minor.proc.stderr
    assert_main_unchanged(gpu_minor.layout, gpu_minor.before)
    # No worktree folder is left behind either (git's own bookkeeping was checked above).
    leftovers = gpu_minor.layout.cache_dir / "worktrees"
    assert not leftovers.exists() or list(leftovers.iterdir()) == []
    tip = git(gpu_minor.layout.root, "rev-parse", gpu_minor.branch).strip()
    out = gpu_minor.proc.stdout
    assert f"branch {gpu_minor.branch}: commit {tip[:12]}" in out
    assert "risk: high" in out
    assert f"JSON report: {gpu_minor.json_file}" in out
    assert "pull request" not in out  # --no-pr: no pull request, and no hint how to open one


def test_gpu_minor_branch_holds_one_commit_with_the_lock_and_the_report(gpu_minor: CliUpgrade) -> None:
    root = gpu_minor.layout.root
    assert gpu_minor.branch in branches(root)
    assert git(root, "rev-list", "--count", f"main..{gpu_minor.branch}").strip() == "1"
    assert git(root, "rev-parse", f"{gpu_minor.branch}^").strip() == gpu_minor.before.head
    assert commit_files(root, gpu_minor.branch) == [
        "charts/versions.lock",
        f"{gpu_minor.stem}.json",
        f"{gpu_minor.stem}.md",
    ]
    subject = git(root, "log", "-1", "--format=%s", gpu_minor.branch).strip()
    assert subject == "charts: upgrade gpu-operator v25.3.4 -> v25.10.1 (minor, risk high)"
    # Vendored charts never enter git.
    assert "charts/external" not in git(root, "ls-tree", "-r", "--name-only", gpu_minor.branch)
    # The committed JSON report is the one written with --json.
    assert json.loads(gpu_minor.show(f"{gpu_minor.stem}.json")) == gpu_minor.report()


def test_gpu_minor_lock_diff_touches_only_the_chart_pins(gpu_minor: CliUpgrade, mirror: Path, tmp_path: Path) -> None:
    old = gpu_minor.lock_before.splitlines()
    new = gpu_minor.show("charts/versions.lock").splitlines()
    assert len(new) == len(old)
    start = old.index("  gpu-operator:")
    changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
    assert changed == [start + 2, start + 3, start + 4, start + 5]
    assert [old[i].split(":")[0] for i in changed] == ["    version", "    url", "    digest", "    tree"]
    entry = index_entry(mirror, GPU_INDEX, "gpu-operator", "v25.10.1")
    assert new[start + 2] == "    version: v25.10.1"
    assert new[start + 3] == f"    url: {entry['urls'][0]}"
    assert new[start + 4] == f"    digest: sha256:{entry['digest']}"
    tree = new[start + 5].removeprefix("    tree: ")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", tree)
    # Comments (and every other chart's lines) are kept byte for byte.
    assert [line for line in new if line.lstrip().startswith("#")] == [
        line for line in old if line.lstrip().startswith("#")
    ]
    # The tree pin is right: a checkout of the branch vendors v25.10.1 to exactly that tree.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--branch", gpu_minor.branch, str(gpu_minor.layout.root), str(clone))
    layout = RepoLayout.at(clone)
    ChartVendor(layout, Fetcher(mirror=Mirror(str(mirror)))).sync(["gpu-operator"])
    assert reference_tree_digest(layout.chart_dir("gpu-operator", "v25.10.1")) == tree


def test_gpu_minor_json_report(gpu_minor: CliUpgrade) -> None:
    report = gpu_minor.report()
    assert set(report) >= REPORT_KEYS
    assert (report["chart"], report["from"], report["to"], report["bump"]) == (
        "gpu-operator", "v25.3.4", "v25.10.1", "minor",
    )  # fmt: skip
    assert report["risk"] == "high"
    envs = [e.name for e in environments.discover(gpu_minor.layout)]
    assert sorted(report["images"]) == sorted(envs) == sorted(report["resources"])
    for env in envs:
        retagged = report["images"][env]["retagged"]
        assert retagged, env
        operator = next(v for k, v in retagged.items() if k.endswith("nvidia/gpu-operator"))
        assert (operator["old"].rsplit(":", 1)[1], operator["new"].rsplit(":", 1)[1]) == ("v25.3.4", "v25.10.1")
    # The upstream changelog: every version in (v25.3.4, v25.10.1], newest first.
    assert [e["version"] for e in report["changelog"]] == ["v25.10.1", "v25.10.0"]
    assert any(report["values"][k] for k in ("added", "removed", "changed"))


def test_gpu_minor_reports_the_shipped_patch_that_no_longer_applies(gpu_minor: CliUpgrade) -> None:
    patches = {p["patch"]: p for p in gpu_minor.report()["patches"]}
    assert set(patches) == {HEALTH_PATCH, GC_PATCH}
    envs = [e.name for e in environments.discover(gpu_minor.layout)]
    health = patches[HEALTH_PATCH]
    # Its JSON `test` op catches the reordered args of the NFD master in v25.10.1.
    assert health["status"] == "failed"
    assert health["target"] == "Deployment/gpu-operator-node-feature-discovery-master"
    assert "test" in health["reason"]
    assert "/spec/template/spec/containers/0/args/3" in health["reason"]
    assert health["envs"] == envs
    assert patches[GC_PATCH]["status"] == "applied"
    assert patches[GC_PATCH]["envs"] == envs
    summary = "\n".join(gpu_minor.report()["summary"])
    assert "patches: 1 stale or failed" in summary


def test_gpu_minor_diffs_compare_renders_without_patches_on_both_sides(gpu_minor: CliUpgrade) -> None:
    # The health-port patch fails on v25.10.1, so "after" is rendered without patches; "before"
    # was rendered with them, and every patch (harbor's too) showed as a change of the upgrade.
    report = gpu_minor.report()
    assert any("diffs are without patches" in line for line in report["summary"])
    for env, changes in report["resources"].items():
        listed = [rid for kind in ("added", "removed", "changed", "version_labels_only") for rid in changes[kind]]
        assert listed, env
        assert not [rid for rid in listed if "harbor" in rid], env
    full_diff = Path(re.search(r"full diff: (\S+)", gpu_minor.proc.stdout).group(1)).read_text()  # type: ignore[union-attr]
    assert "secret.reloader.stakater.com/reload" not in full_diff  # what harbor's patch adds


def test_gpu_minor_markdown_report_fits_a_pull_request_body(gpu_minor: CliUpgrade) -> None:
    markdown = gpu_minor.show(f"{gpu_minor.stem}.md")
    assert len(markdown) < GITHUB_BODY_LIMIT
    assert markdown.startswith("# Upgrade gpu-operator: v25.3.4 -> v25.10.1\n")
    assert "**Risk:** high" in markdown
    assert f"- failed: `{HEALTH_PATCH}`" in markdown
    for line in gpu_minor.report()["summary"]:
        assert f"- {line}" in markdown


def test_gpu_minor_report_lists_images_once_and_counts_version_label_changes_apart(gpu_minor: CliUpgrade) -> None:
    report = gpu_minor.report()
    markdown = gpu_minor.show(f"{gpu_minor.stem}.md")
    layout = gpu_minor.layout
    envs = [e.name for e in environments.discover(layout)]
    registries = {
        e.name: str(reg)
        for e in environments.discover(layout)
        if (reg := environments.setting(layout, e, "offline.registry"))
    }
    assert registries  # stage and the sample site pull through their site registry
    # Two image lists: prod and the customer site (a production site) run a pre-installed driver
    # (environments/prod/releases/gpu-operator.yaml: driver.enabled false), so the driver image is
    # in dev's list only; each list is shared with the environments that pull it through a site
    # registry, which see the same changes rewritten.
    groups = report["image_groups"]
    assert [sorted(g["envs"]) for g in groups] == [["dev", "stage"], ["prod", "sample-site"]]
    assert {env: reg for g in groups for env, reg in g["through_registry"].items()} == registries
    images = markdown.split("## Images")[1].split("## Resources")[0]
    assert images.count("retagged `nvcr.io/nvidia/gpu-operator:v25.3.4` -> `nvcr.io/nvidia/gpu-operator:v25.10.1`") == 2
    # The operator's operands come from the image inventory: full references, the driver per node OS.
    driver = "retagged `nvcr.io/nvidia/driver:580.82.07-ubuntu22.04` -> `nvcr.io/nvidia/driver:580.105.08-ubuntu22.04`"
    assert images.count(driver) == 1
    toolkit = "`nvcr.io/nvidia/k8s/container-toolkit:v1.17.8-ubuntu20.04` -> `nvcr.io/nvidia/k8s/container-toolkit:v1.18.1`"
    assert images.count(toolkit) == 2
    listed = [line for line in images.splitlines() if line.startswith("- ")]
    assert listed and not any(registry in line for registry in registries.values() for line in listed)
    # Resources whose only change is helm.sh/chart and app.kubernetes.io/version, counted apart.
    labels_only = {env: report["resources"][env]["version_labels_only"] for env in envs}
    assert len(set(map(tuple, labels_only.values()))) == 1
    counted = labels_only[envs[0]]
    assert "ClusterRoleBinding//gpu-operator" in counted
    assert not set(counted) & set(report["resources"][envs[0]]["changed"])
    assert f"; {len(counted)} resources: version labels only" in markdown
    [resources_line] = [line for line in markdown.splitlines() if "resources: version labels only" in line]
    assert resources_line.startswith(f"- **{', '.join(envs)}**: ")
    diffs = markdown.split("## Rendered diffs")[1]
    assert "ClusterRoleBinding//gpu-operator\n" not in diffs
    # The full diff keeps them, and shows that only those labels changed.
    full_diff = Path(re.search(r"full diff: (\S+)", gpu_minor.proc.stdout).group(1)).read_text()  # type: ignore[union-attr]
    section = full_diff.split(f"### {envs[0]} changed gpu-operator: ClusterRoleBinding//gpu-operator\n")[1]
    section = section.split("\n### ")[0]
    changed = [line for line in section.splitlines() if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    assert changed
    assert all("helm.sh/chart:" in line or "app.kubernetes.io/version:" in line for line in changed)
    # The changelog links the chart's own releases only.
    assert [e["links"] for e in report["changelog"]] == [
        ["https://github.com/NVIDIA/gpu-operator/releases/tag/v25.10.1"],
        ["https://github.com/NVIDIA/gpu-operator/releases/tag/v25.10.0"],
    ]


# --- 2. gpu-operator to the newest version (in-process) -------------------------------------------


def test_gpu_operator_default_target_is_the_newest_a_major_bump(
    synced_project: RepoLayout, mirror: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_git_identity(monkeypatch, tmp_path)
    before = main_state(synced_project)
    lines: list[str] = []

    result = Upgrader(synced_project, Fetcher(mirror=Mirror(str(mirror))), lines.append, environ={}).run(
        UpgradeOptions("gpu-operator", open_pr=False)
    )

    assert result is not None
    assert (result.old, result.new, result.branch) == ("v25.3.4", "v26.7.0", "chart/gpu-operator-v26.7.0")
    assert result.report.bump == "major"
    assert result.report.risk == "high"
    assert result.pull_request == ""
    root = synced_project.root
    assert git(root, "rev-parse", result.branch).strip() == result.commit
    assert git(root, "rev-list", "--count", f"main..{result.branch}").strip() == "1"
    lock = yaml.safe_load(git(root, "show", f"{result.branch}:charts/versions.lock"))
    assert lock["charts"]["gpu-operator"]["version"] == "v26.7.0"
    # Every version from above v25.3.4 up to v26.7.0, newest first (semver, not file order).
    assert [e["version"] for e in result.report.changelog] == [
        "v26.7.0", "v26.3.3", "v26.3.2", "v26.3.1", "v26.3.0", "v25.10.1", "v25.10.0",
    ]  # fmt: skip
    assert_main_unchanged(synced_project, before)
    assert lines[0] == "upgrading gpu-operator v25.3.4 -> v26.7.0 on branch chart/gpu-operator-v26.7.0"


def test_kube_prometheus_stack_major_upgrade_reports_crd_changes_groups_and_its_own_release(
    synced_project: RepoLayout, mirror: Path, tmp_path: Path
) -> None:
    # The monitoring tier's release `prometheus` as committed: 58.0.1 -> 69.8.2 through the CLI.
    root = synced_project.root
    before = main_state(synced_project)
    json_file = tmp_path / "kps.json"
    envs = [e.name for e in environments.discover(synced_project)]

    proc = inv(
        root, "charts.upgrade", "kube-prometheus-stack", "--to", "69.8.2", "--no-pr", "--json", str(json_file),
        CHARTS_MIRROR=str(mirror),
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert "kube-prometheus-stack 58.0.1 -> 69.8.2 (major;" in proc.stdout
    assert "CRDs: 0 added, 0 removed, 10 changed" in proc.stdout
    assert_main_unchanged(synced_project, before)
    branch = "chart/kube-prometheus-stack-69.8.2"
    assert branches(root) == [branch, "main"]
    report = json.loads(json_file.read_text())
    assert (report["bump"], report["risk"], report["releases"]) == ("major", "high", ["prometheus"])
    # All ten operator CRDs, from the `crds` subchart's crds/ folder, compared and changed
    # (alertmanagerconfigs holds a bare `=`: read as Kubernetes reads it, not skipped).
    crds = sorted(f"{plural}.monitoring.coreos.com" for plural in KPS_CRD_PLURALS)
    assert report["crds"]["compared"] == sorted(report["crds"]["changed"]) == crds
    assert report["unreadable"] == []
    assert report["crds"]["changed"]["alertmanagers.monitoring.coreos.com"]["fields"]["v1"]["removed"] == [
        "spec.alertmanagerConfiguration.global.httpConfig.proxyURL"
    ]
    folder = "charts/external/kube-prometheus-stack-69.8.2/charts/crds/crds/"
    assert report["crd_folders"] == [folder]
    markdown = git(root, "show", f"{branch}:reports/upgrades/kube-prometheus-stack-58.0.1-to-69.8.2.md")
    assert f"`kubectl --context CONTEXT apply --server-side --force-conflicts -f {folder}`" in markdown
    # The chart's own release in its multi-chart repository; not kube-prometheus's tag 69.8.2.
    assert [e["links"] for e in report["changelog"]] == [
        ["https://github.com/prometheus-community/helm-charts/releases/tag/kube-prometheus-stack-69.8.2"]
    ]
    assert "prometheus-operator/kube-prometheus/releases" not in markdown
    # One image list and one resource list for the environments that change alike (those that
    # pull through a site registry join the group after the ones that pull upstream).
    [images] = report["image_groups"]
    assert sorted(images["envs"]) == sorted(envs)
    assert images["through_registry"] == {"stage": "10.61.3.20:30002", "sample-site": "192.168.50.10:30002"}
    assert markdown.count("retagged `docker.io/grafana/grafana:10.4.0` -> `docker.io/grafana/grafana:11.5.2`") == 1
    assert "stage (through `10.61.3.20:30002`)" in markdown
    [group] = report["resource_groups"]
    assert sorted(group["envs"]) == sorted(envs)
    labels_only = group["version_labels_only"]
    # Most changed resources changed only their chart/version labels: counted, not listed.
    assert len(labels_only) > 40
    assert "ClusterRoleBinding//prometheus-kube-state-metrics" in labels_only  # helm.sh/chart, app.kubernetes.io/version
    # ... while the operator's Deployment (new image, new flags) is a real change.
    assert "Deployment/monitoring/prometheus-kube-prometheus-operator" in group["changed"]
    assert not set(labels_only) & set(group["changed"])
    assert f"; {len(labels_only)} resources: version labels only" in markdown


# --- 3. csi-driver-nfs: semver order across the v4.10.0 -> 4.11.0 spelling change ----------------


def test_csi_default_target_is_the_semver_newest_across_the_v_prefix_change(
    synced_project: RepoLayout, mirror: Path
) -> None:
    vendor = ChartVendor(synced_project, Fetcher(mirror=Mirror(str(mirror))))
    chart = VersionsLock.load(synced_project.lock_file).get("csi-driver-nfs")
    assert chart.version == "v4.9.0"

    target, versions = resolve_target(vendor, chart, None)

    # As strings "v4.9.0" > "v4.10.0" > "4.13.4": only semver order gives 4.13.4.
    assert target == "4.13.4"
    assert bump_kind(chart.version, target) == "minor"
    spelled = [v.version for v in versions]
    assert spelled[:3] == ["4.13.4", "4.13.3", "4.13.2"]
    assert spelled.index("4.11.0") + 1 == spelled.index("v4.10.0")
    assert spelled.index("v4.10.0") + 1 == spelled.index("v4.9.0")


# --- 4. a fixture chart: removed value, removed CRD field, retagged image, renamed target -------

WIDGET_CRD = """apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
%s
"""

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-%s
  namespace: {{ .Release.Namespace }}
  labels: {app: demo}
spec:
  replicas: 1
  selector:
    matchLabels: {app: demo}
  template:
    metadata:
      labels: {app: demo}
    spec:
      containers:
        - name: app
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
"""

DEMO_IMAGE = "registry.example.com/demo/app"


def demo_chart(version: str, *, deployment: str, legacy: bool, crd_fields: list[str]) -> bytes:
    values: dict[str, Any] = {"greeting": "hello", "image": {"repository": DEMO_IMAGE, "tag": version}}
    if legacy:
        values["legacy"] = {"enabled": True}
    properties = "\n".join(f"                {name}: {{type: string}}" for name in crd_fields)
    return tar_bytes(
        [
            Entry("demo/Chart.yaml", data=chart_yaml("demo", version, app_version=version).encode()),
            Entry("demo/values.yaml", data=yaml.safe_dump(values, sort_keys=False).encode()),
            Entry("demo/templates/configmap.yaml", data=CONFIGMAP.encode()),
            Entry("demo/templates/deployment.yaml", data=(DEPLOYMENT % deployment).encode()),
            Entry("demo/crds/widgets.yaml", data=(WIDGET_CRD % properties).encode()),
        ]
    )


CHANGES = {
    "1.5.0": "- kind: added\n  description: A greeting value\n",
    "2.0.0": (
        "- kind: changed\n  description: The server Deployment is now called backend\n"
        "- kind: removed\n  description: The legacy mode and its value legacy.enabled\n"
        "- kind: security\n  description: Fix CVE-2024-12345 in the app image\n"
        "  links:\n    - name: CVE-2024-12345\n      url: https://example.com/CVE-2024-12345\n"
    ),
    "3.0.0": "- kind: changed\n  description: Beyond the requested version\n",
}


def demo_site(root: Path) -> Path:
    """A Helm repository with demo 1.0.0, 1.5.0, 2.0.0 and 3.0.0, changes annotated in the index."""

    def old(version: str) -> bytes:
        return demo_chart(version, deployment="server", legacy=True, crd_fields=["size", "color"])

    def new(version: str) -> bytes:
        return demo_chart(version, deployment="backend", legacy=False, crd_fields=["size"])

    write_repo(
        root,
        [
            RepoChart("demo", "1.0.0", old("1.0.0")),
            RepoChart("demo", "1.5.0", old("1.5.0")),
            RepoChart("demo", "2.0.0", new("2.0.0")),
            RepoChart("demo", "3.0.0", new("3.0.0")),
        ],
    )
    index_file = root / "index.yaml"
    index = yaml.safe_load(index_file.read_text())
    for entry in index["entries"]["demo"]:
        entry["appVersion"] = entry["version"]
        if entry["version"] in CHANGES:
            entry["annotations"] = {"artifacthub.io/changes": CHANGES[entry["version"]]}
    index_file.write_text(yaml.safe_dump(index, sort_keys=False))
    return root


def test_fixture_chart_major_upgrade_reports_every_kind_of_impact(
    synced_project: RepoLayout, serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = serve(demo_site(tmp_path / "site"))
    root = synced_project.root
    added = inv(
        root, "charts.add", "demo", "--repo", server.url, "--version", "1.0.0", "--release", "demo",
        "--tier", "applications",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    override = root / "environments/dev/releases/demo.yaml"
    override.write_text("# dev keeps the legacy mode off.\nlegacy:\n  enabled: false\n")
    (root / "patches/demo").mkdir(parents=True)
    (root / "patches/demo/kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\npatches:\n"
        "  - path: server-annotation.yaml\n    target:\n      group: apps\n      kind: Deployment\n"
        "      name: demo-server\n"
    )
    (root / "patches/demo/server-annotation.yaml").write_text(
        "# Why: our ingress controller finds the server by this annotation.\n"
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: demo-server\n"
        '  annotations:\n    astrago.io/patched: "true"\n'
    )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "add demo 1.0.0")
    set_git_identity(monkeypatch, tmp_path)
    envs = [e.name for e in environments.discover(synced_project)]

    result = Upgrader(synced_project, Fetcher(backoff=0.0), environ={}).run(UpgradeOptions("demo", to="2.0.0"))

    assert result is not None
    # The patch did apply to 1.0.0 (the render from before the bump, in the checkout).
    before_docs = [d for d in yaml.safe_load_all((root / "rendered/dev/demo.yaml").read_text()) if d]
    server_deployment = next(d for d in before_docs if d["kind"] == "Deployment")
    assert server_deployment["metadata"]["name"] == "demo-server"
    assert server_deployment["metadata"]["annotations"] == {"astrago.io/patched": "true"}

    report = result.report
    assert (report.old, report.new, report.bump, report.risk) == ("1.0.0", "2.0.0", "major", "high")
    assert result.branch == "chart/demo-2.0.0"
    # Values: the removed default our dev override still sets.
    assert report.values.removed == {"legacy.enabled": True}
    assert report.values.changed == {"image.tag": ("1.0.0", "2.0.0")}
    assert report.overrides == [
        AffectedOverride(
            "environments/dev/releases/demo.yaml",
            "legacy.enabled",
            "removed",
            "default legacy.enabled no longer exists",
        )
    ]
    # CRDs from crds/: the removed field.
    assert report.crds["added"] == report.crds["removed"] == []
    assert report.crds["changed"] == {
        "widgets.example.com": {"fields": {"v1": {"added": [], "removed": ["spec.color"]}}, "source": "crds/"}
    }
    assert "CRD fields or CRDs removed: widgets.example.com" in report.observed()
    # Images: the retag, in every environment, and nothing else.
    retag = {DEMO_IMAGE: {"old": f"{DEMO_IMAGE}:1.0.0", "new": f"{DEMO_IMAGE}:2.0.0"}}
    assert report.images == {env: {"added": [], "removed": [], "retagged": retag} for env in envs}
    assert report.mirror_list() == [f"{DEMO_IMAGE}:2.0.0"]
    # The renamed Deployment: removed and added; the patch that targets it is stale.
    dev = {(c.change, c.resource) for c in report.resources["dev"].changes if c.release == "demo"}
    assert ("removed", "Deployment/demo/demo-server") in dev
    assert ("added", "Deployment/demo/demo-backend") in dev
    assert len(report.patches) == 1
    patch = report.patches[0]
    assert (patch["patch"], patch["target"], patch["status"]) == (
        "patches/demo/server-annotation.yaml", "Deployment/demo-server", "stale",
    )  # fmt: skip
    assert "not in the rendered release" in patch["reason"]
    assert patch["envs"] == envs
    # Changelog: (1.0.0, 2.0.0] newest first, 3.0.0 left out, the security fix first.
    assert [e["version"] for e in report.changelog] == ["2.0.0", "1.5.0"]
    first = report.changelog[0]["changes"]
    assert [c["kind"] for c in first] == ["security", "changed", "removed"]
    assert first[0]["description"] == "Fix CVE-2024-12345 in the app image"
    assert first[0]["links"] == ["https://example.com/CVE-2024-12345"]
    assert report.changelog[1]["changes"] == [{"kind": "added", "description": "A greeting value", "links": []}]
    # The same content is what the branch carries.
    committed = json.loads(git(root, "show", f"{result.branch}:reports/upgrades/demo-1.0.0-to-2.0.0.json"))
    assert committed["overrides_affected"] == [o.__dict__ for o in report.overrides]
    assert committed["patches"][0]["status"] == "stale"
    markdown = git(root, "show", f"{result.branch}:reports/upgrades/demo-1.0.0-to-2.0.0.md")
    assert "- **security**: Fix CVE-2024-12345 in the app image (https://example.com/CVE-2024-12345)" in markdown
    assert "`environments/dev/releases/demo.yaml`: `legacy.enabled` (removed" in markdown


# --- 5. refusals and no-ops -------------------------------------------------------------------


@pytest.mark.parametrize("dirt", ["modified", "untracked"])
def test_a_dirty_working_tree_is_refused_and_nothing_changes(
    synced_project: RepoLayout, mirror: Path, dirt: str
) -> None:
    root = synced_project.root
    if dirt == "modified":
        values = root / "environments/dev/values.yaml"
        values.write_text(values.read_text() + "# work in progress\n")
    else:
        (root / "notes.txt").write_text("todo\n")
    status = git(root, "status", "--porcelain")
    before = snapshot(root)
    head = git(root, "rev-parse", "HEAD")

    done = inv(root, "charts.upgrade", "gpu-operator", "--no-pr", CHARTS_MIRROR=str(mirror))

    assert done.returncode == 1
    assert done.stderr == (
        "error: the working tree has uncommitted changes: commit or stash them first (nothing was done)\n"
    )
    assert done.stdout == ""
    assert branches(root) == ["main"]
    assert git(root, "rev-parse", "HEAD") == head
    assert git(root, "status", "--porcelain") == status
    assert snapshot(root) == before
    assert worktrees(root) == [f"worktree {root}"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["nope"],
            "error: nope is not in charts/versions.lock "
            "(known: csi-driver-nfs, gpu-operator, harbor, ingress-nginx, kube-prometheus-stack)",
        ),
        (
            ["gpu-operator", "--to", "v99.0.0"],
            "error: gpu-operator v99.0.0 is not in the repository index https://nvidia.github.io/gpu-operator",
        ),
        (
            ["gpu-operator", "--to", "25.10.1"],
            "error: gpu-operator 25.10.1 is not in the repository index https://nvidia.github.io/gpu-operator "
            "(the index spells it 'v25.10.1')",
        ),
        (
            ["gpu-operator", "--to", "v24.9.2"],
            "error: v24.9.2 is older than the locked v25.3.4: charts.upgrade does not downgrade",
        ),
    ],
    ids=["unknown-chart", "unknown-version", "misspelled-version", "downgrade"],
)
def test_bad_requests_are_clear_one_line_errors(
    synced_project: RepoLayout, mirror: Path, args: list[str], message: str
) -> None:
    root = synced_project.root
    before = main_state(synced_project)

    done = inv(root, "charts.upgrade", *args, "--no-pr", CHARTS_MIRROR=str(mirror))

    assert done.returncode == 1
    assert done.stderr == message + "\n"
    assert branches(root) == ["main"]
    assert_main_unchanged(synced_project, before)


def test_a_chart_at_its_newest_version_has_nothing_to_upgrade(synced_project: RepoLayout, mirror: Path) -> None:
    root = synced_project.root
    lock = synced_project.lock_file
    text = lock.read_text()
    start = text.index("  csi-driver-nfs:\n")
    end = text.index("  # NVIDIA GPU operator")
    block = text[start:end]
    pinned = re.sub(
        r"^    (url|digest|tree): .*\n", "", block.replace("version: v4.9.0", "version: 4.13.4"), flags=re.M
    )
    lock.write_text(text[:start] + pinned + text[end:])
    ChartVendor(synced_project, Fetcher(mirror=Mirror(str(mirror)))).sync(["csi-driver-nfs"])
    assert VersionsLock.load(lock).get("csi-driver-nfs").version == "4.13.4"
    git(root, "commit", "-q", "-am", "csi-driver-nfs 4.13.4")
    before = main_state(synced_project)

    done = inv(root, "charts.upgrade", "csi-driver-nfs", CHARTS_MIRROR=str(mirror))

    assert done.returncode == 0, done.stderr
    assert "csi-driver-nfs is already at 4.13.4: nothing to upgrade" in done.stderr
    assert done.stdout == ""
    assert branches(root) == ["main"]
    assert_main_unchanged(synced_project, before)


# --- 6. an interrupted run ------------------------------------------------------------------------


@dataclass
class Gate:
    """A loopback mirror that holds the first chart archive request until released."""

    url: str = ""
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    paths: list[str] = field(default_factory=list)


class _GateHandler(http.server.SimpleHTTPRequestHandler):
    gate: Gate

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.gate.paths.append(self.path)
        if self.path.endswith(".tgz"):
            self.gate.arrived.set()
            self.gate.release.wait(timeout=300)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client was killed meanwhile
            super().do_GET()


@pytest.fixture
def gated_mirror(mirror: Path) -> Iterator[Gate]:
    gate = Gate()
    handler = functools.partial(type("G", (_GateHandler,), {"gate": gate}), directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    gate.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield gate
    gate.release.set()
    server.shutdown()
    server.server_close()


def test_an_interrupted_upgrade_leaves_no_branch_and_a_rerun_from_a_hook_prunes_what_it_left(
    synced_project: RepoLayout, gated_mirror: Gate, tmp_path: Path
) -> None:
    """Deterministic: the upgrade fetches the new chart archive only inside its worktree, before
    its commit; the mirror holds that request, and the run is killed while it waits."""
    root = synced_project.root
    before = main_state(synced_project)
    command = [*INV, "charts.upgrade", "csi-driver-nfs", "--no-pr"]
    env = cli_env(root, CHARTS_MIRROR=gated_mirror.url)
    branch = "chart/csi-driver-nfs-4.13.4"

    proc = subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        assert gated_mirror.arrived.wait(timeout=300), "the upgrade never fetched the new chart"
        assert len(worktrees(root)) == 2  # working in its worktree...
        assert branches(root) == ["main"]  # ...with no branch yet
        assert proc.poll() is None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    gated_mirror.release.set()

    # Killed mid-upgrade: the checkout is as it was, and no branch exists; the marked worktree is left.
    after = main_state(synced_project)
    assert (after.head, after.branch, after.status) == (before.head, "main", "")
    assert after.external == before.external
    assert after.files == before.files
    assert branches(root) == ["main"]
    assert len(worktrees(root)) == 2

    # The rerun comes from a git hook of another repository: GIT_DIR and friends point there.
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    git(other, "commit", "-q", "--allow-empty", "-m", "other")
    other_refs = git(other, "for-each-ref")
    hook_env = {
        "GIT_DIR": str(other / ".git"), "GIT_WORK_TREE": str(other), "GIT_INDEX_FILE": str(other / ".git" / "index"),
        "GIT_PREFIX": "", "GIT_OBJECT_DIRECTORY": str(other / ".git" / "objects"),
    }  # fmt: skip
    rerun = subprocess.run(command, cwd=root, env={**env, **hook_env}, capture_output=True, text=True, timeout=600)

    assert rerun.returncode == 0, rerun.stderr
    assert git(root, "rev-list", "--count", f"main..{branch}").strip() == "1"
    assert git(root, "rev-parse", f"{branch}^").strip() == before.head
    assert commit_files(root, branch) == [
        "charts/versions.lock",
        "reports/upgrades/csi-driver-nfs-v4.9.0-to-4.13.4.json",
        "reports/upgrades/csi-driver-nfs-v4.9.0-to-4.13.4.md",
    ]
    assert branches(root) == [branch, "main"]
    assert_main_unchanged(synced_project, before)  # the crashed run's worktree is gone too
    assert list((synced_project.cache_dir / "worktrees").iterdir()) == []
    git(root, "fsck", "--no-progress")
    assert git(other, "for-each-ref") == other_refs
    assert not (other / ".git" / "worktrees").exists()
    assert git(other, "status", "--porcelain") == ""


def test_an_existing_branch_of_that_name_is_refused_and_kept(synced_project: RepoLayout, mirror: Path) -> None:
    """A user's branch named like ours (here: merged long ago, an ancestor of HEAD) is never
    deleted or moved: the upgrade refuses before doing anything."""
    root = synced_project.root
    git(root, "branch", "chart/csi-driver-nfs-4.13.4")
    tip = git(root, "rev-parse", "chart/csi-driver-nfs-4.13.4").strip()
    refs = git(root, "for-each-ref")

    done = inv(root, "charts.upgrade", "csi-driver-nfs", "--no-pr", CHARTS_MIRROR=str(mirror))

    assert done.returncode == 1
    assert done.stderr == (
        f"error: branch chart/csi-driver-nfs-4.13.4 already exists (at {tip[:12]}): review it, or delete it "
        "(`git branch -D chart/csi-driver-nfs-4.13.4`) to run the upgrade again\n"
    )
    assert git(root, "for-each-ref") == refs
    assert worktrees(root) == [f"worktree {root}"]


# --- 7. the pull request, on a fake GitHub API -------------------------------------------------


@dataclass(frozen=True)
class ApiCall:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeGitHub:
    url: str = ""
    calls: list[ApiCall] = field(default_factory=list)


class _GitHubHandler(http.server.BaseHTTPRequestHandler):
    api: FakeGitHub

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _record(self) -> ApiCall:
        length = int(self.headers.get("Content-Length") or 0)
        call = ApiCall(self.command, self.path, dict(self.headers), self.rfile.read(length))
        self.api.calls.append(call)
        return call

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        call = self._record()
        if self.path == "/repos/acme/astrago/pulls":
            self._reply(201, {"number": 7, "html_url": "https://github.com/acme/astrago/pull/7"})
        elif self.path == "/repos/acme/astrago/issues/7/labels":
            self._reply(200, [{"name": name} for name in call.json()["labels"]])
        else:
            self._reply(404, {"message": "Not Found"})

    def do_GET(self) -> None:
        self._record()
        self._reply(404, {"message": "Not Found"})


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    api = FakeGitHub()
    with loopback(type("H", (_GitHubHandler,), {"api": api})) as api.url:
        yield api


def with_github_origin(layout: RepoLayout, tmp_path: Path, remote: str = "https://github.com/acme/astrago.git") -> Path:
    """origin on GitHub (github.com unless told), pushing to a local bare repository."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(layout.root, "remote", "add", "origin", remote)
    git(layout.root, "config", "remote.origin.pushurl", str(bare))
    return bare


def test_the_upgrade_opens_a_labelled_pull_request(
    synced_project: RepoLayout, mirror: Path, fake_github: FakeGitHub, tmp_path: Path
) -> None:
    root = synced_project.root
    bare = with_github_origin(synced_project, tmp_path)
    report_file = tmp_path / "report.json"
    branch = "chart/csi-driver-nfs-4.13.4"

    done = inv(
        root, "charts.upgrade", "csi-driver-nfs", "--json", str(report_file),
        CHARTS_MIRROR=str(mirror), GITHUB_TOKEN=TOKEN, GITHUB_API_URL=fake_github.url,
        GITHUB_SERVER_URL="https://github.com",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "pull request: https://github.com/acme/astrago/pull/7" in done.stdout
    report = json.loads(report_file.read_text())
    assert (report["to"], report["bump"]) == ("4.13.4", "minor")
    # The branch was pushed (to the push URL).
    tip = git(root, "rev-parse", branch).strip()
    assert git(bare, "rev-parse", f"refs/heads/{branch}").strip() == tip
    assert git(bare, "for-each-ref", "--format=%(refname)").split() == [f"refs/heads/{branch}"]

    assert [(c.method, c.path) for c in fake_github.calls] == [
        ("POST", "/repos/acme/astrago/pulls"),
        ("POST", "/repos/acme/astrago/issues/7/labels"),
    ]
    pulls, labels = fake_github.calls
    pull = pulls.json()
    assert (pull["head"], pull["base"]) == (branch, "main")
    assert pull["title"] == "Upgrade csi-driver-nfs v4.9.0 -> 4.13.4 (minor)"
    body = pull["body"]
    assert len(body) < GITHUB_BODY_LIMIT
    assert body.startswith("# Upgrade csi-driver-nfs: v4.9.0 -> 4.13.4\n")
    assert "## Summary" in body
    for line in report["summary"]:
        assert f"- {line}" in body
    assert "semver:minor" in labels.json()["labels"]
    assert labels.json()["labels"] == ["semver:minor", f"risk:{report['risk']}", "chart-upgrade"]
    # The token travels in the Authorization header only.
    for call in fake_github.calls:
        assert call.headers["Authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in call.path
        assert TOKEN.encode() not in call.body
        assert all(TOKEN not in value for key, value in call.headers.items() if key != "Authorization")
    assert TOKEN not in done.stdout + done.stderr
    assert TOKEN not in (root / ".git" / "config").read_text()
    assert branches(root) == [branch, "main"]
    assert git(root, "status", "--porcelain") == ""


def test_the_pull_request_targets_the_first_stage_branch_once_the_stage_branches_exist(
    synced_project: RepoLayout, mirror: Path, fake_github: FakeGitHub, tmp_path: Path
) -> None:
    root = synced_project.root
    bare = with_github_origin(synced_project, tmp_path)
    for stage in ("dev", "stage", "prod"):
        git(root, "push", "-q", str(bare), f"HEAD:refs/heads/{stage}")
    git(root, "fetch", "-q", str(bare), "+refs/heads/*:refs/remotes/origin/*")  # origin's URL is not fetchable

    done = inv(
        root, "charts.upgrade", "csi-driver-nfs", CHARTS_MIRROR=str(mirror), GITHUB_TOKEN=TOKEN,
        GITHUB_API_URL=fake_github.url, GITHUB_SERVER_URL="https://github.com",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    pulls = fake_github.calls[0]
    assert (pulls.path, pulls.json()["head"], pulls.json()["base"]) == (
        "/repos/acme/astrago/pulls", "chart/csi-driver-nfs-4.13.4", "dev",
    )


def test_a_github_enterprise_remote_gets_its_pull_request(
    synced_project: RepoLayout, mirror: Path, fake_github: FakeGitHub, tmp_path: Path
) -> None:
    # As GitHub Actions on a GHE server sets them; before, only github.com remotes were matched
    # and the upgrade said "set GITHUB_TOKEN" with the token set.
    root = synced_project.root
    bare = with_github_origin(synced_project, tmp_path, "https://ghe.acme.corp/acme/astrago.git")

    done = inv(
        root, "charts.upgrade", "csi-driver-nfs", CHARTS_MIRROR=str(mirror), GITHUB_TOKEN=TOKEN,
        GITHUB_API_URL=fake_github.url, GITHUB_SERVER_URL="https://ghe.acme.corp",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert "pull request: https://github.com/acme/astrago/pull/7" in done.stdout
    assert "set GITHUB_TOKEN" not in done.stdout
    assert [(c.method, c.path) for c in fake_github.calls] == [
        ("POST", "/repos/acme/astrago/pulls"),
        ("POST", "/repos/acme/astrago/issues/7/labels"),
    ]
    assert git(bare, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/chart/csi-driver-nfs-4.13.4"]


def test_without_a_token_no_request_is_made_and_the_output_says_how_to_open_it(
    synced_project: RepoLayout, mirror: Path, fake_github: FakeGitHub, tmp_path: Path
) -> None:
    root = synced_project.root
    bare = with_github_origin(synced_project, tmp_path)

    done = inv(root, "charts.upgrade", "csi-driver-nfs", CHARTS_MIRROR=str(mirror), GITHUB_API_URL=fake_github.url)

    assert done.returncode == 0, done.stderr
    assert fake_github.calls == []
    assert "no pull request: set GITHUB_TOKEN" in done.stdout
    assert "open it by hand with the report as its body" in done.stdout
    assert "pull request: http" not in done.stdout
    assert "chart/csi-driver-nfs-4.13.4" in branches(root)
    assert git(bare, "for-each-ref") == ""  # nothing pushed either


# --- 8. a dry run ---------------------------------------------------------------------------------


def test_a_dry_run_writes_the_report_under_the_cache_and_commits_nothing(
    synced_project: RepoLayout, mirror: Path
) -> None:
    root = synced_project.root
    before = main_state(synced_project)
    refs_before = git(root, "for-each-ref")

    assert not synced_project.rendered_dir.exists()
    json_file = synced_project.root.parent / "report.json"

    done = inv(
        root, "charts.upgrade", "csi-driver-nfs", "--dry-run", "--json", str(json_file), CHARTS_MIRROR=str(mirror)
    )

    assert done.returncode == 0, done.stderr
    # Nothing but its output: no rendered/ in the checkout (its "before" renders go with the report).
    assert not synced_project.rendered_dir.exists()
    assert json.loads(json_file.read_text())["to"] == "4.13.4"
    work = synced_project.cache_dir / "upgrades" / "chart_csi-driver-nfs-4.13.4"
    md = work / "csi-driver-nfs-v4.9.0-to-4.13.4.md"
    js = work / "csi-driver-nfs-v4.9.0-to-4.13.4.json"
    assert f"dry run: report in {md} (nothing committed)" in done.stdout
    assert md.read_text().startswith("# Upgrade csi-driver-nfs: v4.9.0 -> 4.13.4\n")
    report = json.loads(js.read_text())
    assert (report["from"], report["to"], report["bump"]) == ("v4.9.0", "4.13.4", "minor")
    assert any(d["retagged"] for d in report["images"].values())
    assert branches(root) == ["main"]
    assert git(root, "for-each-ref") == refs_before
    assert git(root, "rev-list", "--count", "HEAD").strip() == "1"
    assert not synced_project.reports_dir.exists()
    assert_main_unchanged(synced_project, before)


@pytest.mark.parametrize(
    ("json_arg", "message"),
    [
        pytest.param(
            "/nonexistent/dir/x.json",
            "error: --json /nonexistent/dir/x.json: folder /nonexistent/dir does not exist: create it first "
            "(nothing was done)",
            id="missing-folder",
        ),
        pytest.param("{tmp}", "error: --json {tmp} is a folder: give the report's file name (nothing was done)", id="a-folder"),
    ],
)
def test_a_json_report_that_cannot_be_written_is_refused_before_any_work(
    synced_project: RepoLayout, mirror: Path, tmp_path: Path, json_arg: str, message: str
) -> None:
    root = synced_project.root
    before = main_state(synced_project)
    cache_before = sorted(synced_project.cache_dir.rglob("*")) if synced_project.cache_dir.exists() else None
    json_arg, message = json_arg.format(tmp=tmp_path), message.format(tmp=tmp_path)
    for extra in (["--dry-run"], ["--no-pr"]):
        done = inv(root, "charts.upgrade", "csi-driver-nfs", *extra, "--json", json_arg, CHARTS_MIRROR=str(mirror))
        assert done.returncode == 1
        assert done.stderr.splitlines() == [message]
        assert done.stdout == ""
    assert not Path("/nonexistent").exists()
    assert not synced_project.rendered_dir.exists()
    assert (sorted(synced_project.cache_dir.rglob("*")) if synced_project.cache_dir.exists() else None) == cache_before
    assert branches(root) == ["main"]
    assert_main_unchanged(synced_project, before)


def test_a_dry_run_vendors_nothing_it_refuses_when_a_locked_chart_is_missing(
    synced_project: RepoLayout, mirror: Path
) -> None:
    root = synced_project.root
    shutil.rmtree(synced_project.chart_dir("harbor", "1.14.2"))
    before = main_state(synced_project)
    done = inv(root, "charts.upgrade", "csi-driver-nfs", "--dry-run", CHARTS_MIRROR=str(mirror))
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        "error: not vendored: harbor-1.14.2; run `inv charts.sync` first (a dry run vendors nothing)"
    )
    assert "Traceback" not in done.stderr
    assert not synced_project.rendered_dir.exists()
    assert_main_unchanged(synced_project, before)


def test_mirror_list_names_upstream_images_not_site_registry_copies() -> None:
    from astrago_deploy.upgrade.report import UpgradeReport, ValuesDiff

    def diff(prefix: str) -> dict[str, object]:
        return {"added": [f"{prefix}nvidia/new:1"], "removed": [],
                "retagged": {f"{prefix}nvidia/op": {"old": f"{prefix}nvidia/op:1", "new": f"{prefix}nvidia/op:2"}}}

    report = UpgradeReport(
        chart="c", release_names=["c"], old="1.0.0", new="1.1.0", old_app="", new_app="", values=ValuesDiff(),
        overrides=[], crds={"added": [], "removed": [], "changed": {}},
        images={"dev": diff("nvcr.io/"), "stage": diff("10.0.0.1:30002/")}, resources={}, patches=[], changelog=[],
        offline_registries={"stage": "10.0.0.1:30002"},
    )
    assert report.mirror_list() == ["nvcr.io/nvidia/new:1", "nvcr.io/nvidia/op:2"]
    assert "images: 2 new or retagged (mirror them for air-gapped sites)" in report.notable()
    everywhere = UpgradeReport(**{**report.__dict__, "images": {"stage": diff("10.0.0.1:30002/")}})
    assert everywhere.mirror_list() == ["10.0.0.1:30002/nvidia/new:1", "10.0.0.1:30002/nvidia/op:2"]
