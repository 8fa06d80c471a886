"""Planning a chart upgrade: the options and the version to upgrade to."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from astrago_deploy.charts.index import ChartVersion, parse_version, version_key
from astrago_deploy.charts.oci import OciChart
from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.errors import InputError
from astrago_deploy.model.lock import LockedChart


@dataclass
class UpgradeOptions:
    name: str
    to: str | None = None
    open_pr: bool = True
    json_file: Path | None = None
    dry_run: bool = False


def resolve_target(vendor: ChartVendor, chart: LockedChart, to: str | None) -> tuple[str, list[ChartVersion]]:
    """The version to upgrade to (as upstream spells it) and the index entries for the changelog."""
    if chart.is_oci:
        tags = vendor.oci.tags(OciChart(chart.repository, chart.name))
        if to:
            if to not in tags:
                raise InputError(f"{chart.name} {to} is not a tag of {chart.repository}")
            return to, []
        stable = [t for t in tags if (v := parse_version(t)) is not None and not v.prerelease]
        if not stable:
            raise InputError(f"{chart.repository}/{chart.name} has no stable version")
        return max(stable, key=version_key), []
    index = vendor.indexes.get(chart.repository)
    versions = index.versions(chart.name, prereleases=True)
    if to:
        return index.find(chart.name, to).version, versions
    newest = index.newest(chart.name)
    if newest is None:
        raise InputError(f"{chart.name}: the repository index lists no stable version")
    return newest.version, versions
