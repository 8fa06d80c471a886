"""Step 2, prepare: the checkout as it is now, rendered for every environment (the "before"
of every diff), after vendoring whatever the lock pins that is missing (a dry run, which
writes nothing but its report, refuses instead and renders next to its report)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.errors import InputError
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools


def render_before(
    layout: RepoLayout,
    vendor: ChartVendor,
    tools: PinnedTools,
    log: Callable[[str], None],
    out: Path,
    sync_missing: bool = True,
) -> tuple[list[environments.Environment], Path]:
    """Every environment, and `out`, the folder their current renders are now in. Charts the lock
    pins that are not vendored are vendored first, or, without `sync_missing`, refused."""
    lock = VersionsLock.load(layout.lock_file)
    envs = environments.discover(layout)
    missing = [c.dirname for c in lock.charts() if not layout.chart_dir(c.name, c.version).is_dir()]
    if missing and not sync_missing:
        raise InputError(f"not vendored: {', '.join(missing)}; run `inv charts.sync` first (a dry run vendors nothing)")
    if missing:
        log(f"vendoring what the lock pins first: {', '.join(missing)}")
        vendor.sync()
    Renderer(layout, tools, out).render(envs)
    return envs, out
