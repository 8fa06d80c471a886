"""Step 1, plan: what to upgrade, to which version, on which branch; the refusals that come
before anything is written (an unknown chart, nothing newer, a downgrade)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from astrago_deploy.charts.index import ChartVersion, newest, parse_version
from astrago_deploy.charts.oci import OciChart
from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.errors import InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model.lock import LockedChart, VersionsLock
from astrago_deploy.model.releases import declared_releases


@dataclass
class UpgradeOptions:
    name: str
    to: str | None = None
    open_pr: bool = True
    json_file: Path | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class UpgradePlan:
    chart: LockedChart  # as locked now
    target: str  # the version to upgrade to, as upstream spells it
    versions: list[ChartVersion]  # index entries, for the changelog
    releases: list[str]  # the releases that use the chart

    @property
    def branch(self) -> str:
        return f"chart/{self.chart.name}-{self.target}"


def check_json_file(path: Path | None) -> None:
    """`--json FILE` must name a file in an existing folder: refused before any work, since a
    run (a dry run above all) writes nothing but its output."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"--json {path} is a folder: give the report's file name (nothing was done)")
    if not path.parent.is_dir():
        raise InputError(f"--json {path}: folder {path.parent} does not exist: create it first (nothing was done)")


def resolve_target(vendor: ChartVendor, chart: LockedChart, to: str | None) -> tuple[str, list[ChartVersion]]:
    """The version to upgrade to (as upstream spells it) and the index entries for the changelog."""
    if chart.is_oci:
        tags = vendor.oci.tags(OciChart(chart.repository, chart.name))
        if to:
            if to not in tags:
                raise InputError(f"{chart.name} {to} is not a tag of {chart.repository}")
            return to, []
        stable = newest(tags, str)
        if stable is None:
            raise InputError(f"{chart.repository}/{chart.name} has no stable version")
        return stable, []
    index = vendor.indexes.get(chart.repository)
    versions = index.versions(chart.name, prereleases=True)
    if to:
        return index.find(chart.name, to).version, versions
    top = index.newest(chart.name)
    if top is None:
        raise InputError(f"{chart.name}: the repository index lists no stable version")
    return top.version, versions


def plan_upgrade(
    layout: RepoLayout, vendor: ChartVendor, options: UpgradeOptions, log: Callable[[str], None]
) -> UpgradePlan | None:
    """The upgrade `options` ask for, or None (said in `log`) when the chart is already there."""
    lock = VersionsLock.load(layout.lock_file)
    if not lock.has(options.name):
        raise InputError(f"{options.name} is not in charts/versions.lock (known: {', '.join(lock.names())})")
    chart = lock.get(options.name)
    target, versions = resolve_target(vendor, chart, options.to)
    old_v, new_v = parse_version(chart.version), parse_version(target)
    if target == chart.version or (old_v is not None and old_v == new_v):
        log(f"{chart.name} is already at {chart.version}: nothing to upgrade")
        return None
    if old_v is not None and new_v is not None and new_v < old_v:
        raise InputError(f"{target} is older than the locked {chart.version}: charts.upgrade does not downgrade")
    releases = [r.name for r in declared_releases(layout) if r.locked_chart == chart.name]
    return UpgradePlan(chart, target, versions, releases)
