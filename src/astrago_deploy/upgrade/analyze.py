"""Step 4, analyze: inside the upgrade's worktree, every patch checked against the new chart,
every environment rendered after the bump, and the report's content put together (values,
overrides, CRDs, images, resources, patches, changelog). `report.py` formats and writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from astrago_deploy.charts.values import ChartValues
from astrago_deploy.core import yaml
from astrago_deploy.core.diagnostics import Diagnostic
from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import charts_lock
from astrago_deploy.images.inventory import images_of_render, node_os
from astrago_deploy.model import environments
from astrago_deploy.model.lock import LockedChart
from astrago_deploy.patches import check as patch_check
from astrago_deploy.render.diff import EnvironmentDiff, diff_folders, load_render
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools
from astrago_deploy.upgrade import report as upgrade_report
from astrago_deploy.upgrade.plan import UpgradePlan


def check_patches(tree: RepoLayout, releases: list[str], tools: PinnedTools) -> list[dict[str, Any]]:
    """Each shipped patch of the chart's releases, grouped, with whether it still applies."""
    if not any((tree.patches_dir / r).is_dir() for r in releases):
        return []
    results = patch_check.check_patches(tree, releases, [], tools)
    return [
        {
            "patch": g.patch,
            "target": g.target,
            "status": g.status,
            "reason": g.reason,
            "release": g.release,
            "envs": list(g.envs),
        }
        for g in patch_check.grouped(results)
    ]


def render_after(tree: RepoLayout, tools: PinnedTools, envs: list[environments.Environment], after: Path) -> list[str]:
    """Render every environment of `tree` into `after`; notes for the report if patches failed."""
    try:
        Renderer(tree, tools, after).render(envs)
    except AstragoError as exc:
        fallback = Renderer(tree, tools, after)
        fallback.patches = False
        fallback.render(envs)
        return [f"rendering with patches failed after the bump (diffs are without patches): {render_headline(exc)}"]
    return []


def render_before_unpatched(
    layout: RepoLayout, tools: PinnedTools, envs: list[environments.Environment], out: Path
) -> Path:
    """Every environment of the checkout `layout` rendered into `out` without patches: the
    "before" to compare with an "after" that had to be rendered without them, so that what
    the patches do is not reported as a change of the upgrade."""
    renderer = Renderer(layout, tools, out)
    renderer.patches = False
    renderer.render(envs)
    return out


def override_files(tree: RepoLayout, releases: list[str]) -> tuple[dict[str, dict[str, Any]], list[Diagnostic]]:
    """The override files of the releases (every environment's, and the helmfile values), parsed,
    and those that could not be read."""
    paths: list[Path] = []
    for release in releases:
        candidates = sorted(tree.environments_dir.glob(f"**/releases/{release}.yaml"))
        candidates.append(tree.helmfile_dir / "values" / f"{release}.yaml.gotmpl")
        paths += [path for path in candidates if path.is_file()]
    return upgrade_report.read_overrides(paths, tree.root)


def build_report(
    layout: RepoLayout,
    tree: RepoLayout,
    plan: UpgradePlan,
    envs: list[environments.Environment],
    before: Path,
    after: Path,
    patches: list[dict[str, Any]],
    notes: list[str],
) -> upgrade_report.UpgradeReport:
    """What changes between the locked chart (in `layout`) and the new one (in `tree`)."""
    chart: LockedChart = plan.chart
    old_dir = layout.chart_dir(chart.name, chart.version)
    new_dir = tree.chart_dir(chart.name, plan.target)
    unreadable: list[Diagnostic] = []
    with charts_lock(layout).shared("charts.upgrade"):  # the old tree is the checkout's, which a sync may swap
        old_values = ChartValues.load(old_dir).coalesced_defaults()
        old_crds = upgrade_report.crds_of_tree(old_dir, unreadable)
        old_meta = chart_meta(old_dir)
    values = upgrade_report.diff_values(old_values, ChartValues.load(new_dir).coalesced_defaults())
    overrides, unreadable_overrides = override_files(tree, plan.releases)
    new_crds = upgrade_report.crds_of_tree(new_dir, unreadable)
    for release in plan.releases:
        old_crds |= upgrade_report.crds_of_render(before / envs[0].name, release)
        new_crds |= upgrade_report.crds_of_render(after / envs[0].name, release)
    resources = {e.name: resource_changes(e.name, before / e.name, after / e.name) for e in envs}
    new_meta = chart_meta(new_dir)
    return upgrade_report.UpgradeReport(
        chart=chart.name,
        release_names=plan.releases,
        old=chart.version,
        new=plan.target,
        old_app=str(old_meta.get("appVersion", "")),
        new_app=str(new_meta.get("appVersion", "")),
        values=values,
        overrides=upgrade_report.affected_overrides(overrides, values),
        unreadable_overrides=unreadable_overrides,
        crds=upgrade_report.diff_crds(old_crds, new_crds),
        crd_folders=upgrade_report.crd_folders(new_dir),
        images={
            e.name: upgrade_report.diff_images(
                images_of_render(before / e.name, node_os(environments.settings(tree, e), e.name)),
                images_of_render(after / e.name, node_os(environments.settings(tree, e), e.name)),
            )
            for e in envs
        },
        resources={env: real for env, (real, _) in resources.items()},
        version_labels_only={env: labels_only for env, (_, labels_only) in resources.items()},
        patches=patches,
        changelog=upgrade_report.changelog(plan.versions, chart.version, plan.target),
        render_notes=notes,
        unreadable=unreadable,
        offline_registries={
            e.name: str(reg) for e in envs if (reg := environments.setting(tree, e, "offline.registry"))
        },
    )


def resource_changes(env: str, before: Path, after: Path) -> tuple[EnvironmentDiff, EnvironmentDiff]:
    """The rendered changes of one environment: the real ones, and those of version labels only."""
    diff = diff_folders(env, before, after)
    if not any(c.change == "changed" for c in diff.changes):
        return diff, EnvironmentDiff(env)
    return upgrade_report.split_version_label_changes(diff, load_render(before), load_render(after))


def chart_meta(chart_dir: Path) -> dict[str, object]:
    return yaml.read_mapping(chart_dir / "Chart.yaml")


def render_headline(exc: Exception) -> str:
    """The line of a long helmfile error that says what failed (the post-renderer's, if any)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("post-render "):
            detail = lines[index + 1] if index + 1 < len(lines) else ""
            return f"{line[:200]} {detail[:300]}".strip()
    return lines[-1][:300] if lines else "unknown error"
