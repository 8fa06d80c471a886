"""Step 3, vendor: inside the upgrade's worktree, the new version vendored by sync's rules
(staged, verified, renamed into place), the lock entry edited, the old version's folder dropped."""

from __future__ import annotations

from astrago_deploy.charts.index import IndexCache
from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core import atomic
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model.lock import LockedChart, VersionsLock
from astrago_deploy.render.diff import prepare_vendored


def vendor_new_version(
    layout: RepoLayout, tree: RepoLayout, fetcher: Fetcher, indexes: IndexCache, chart: LockedChart, target: str
) -> None:
    """Vendor `chart` at `target` into the worktree `tree` (whose other charts come from `layout`)."""
    prepare_vendored(layout, tree, fetcher)
    tree_vendor = ChartVendor(tree, fetcher, indexes=indexes)
    new_entry = LockedChart(chart.name, chart.repository, target)
    with atomic.staging_dir(tree.external_dir, "upgrade") as staging:
        staged = tree_vendor.stage_many([new_entry], staging)
        tree_vendor.install(staged)
    tree_lock = VersionsLock.load(tree.lock_file)
    tree_lock.set(staged[0].chart)
    tree_lock.save()
    if not any(c.dirname == chart.dirname for c in tree_lock.charts()):
        atomic.remove_dir(tree.chart_dir(chart.name, chart.version))
