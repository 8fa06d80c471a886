"""Step 2, prepare: the checkout as it is now, rendered for every environment (the "before"
of every diff), after vendoring whatever the lock pins that is missing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.model.lock import VersionsLock
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools


def render_before(
    layout: RepoLayout, vendor: ChartVendor, tools: PinnedTools, log: Callable[[str], None]
) -> tuple[list[environments.Environment], Path]:
    """Every environment, and the folder their current renders are in."""
    lock = VersionsLock.load(layout.lock_file)
    envs = environments.discover(layout)
    missing = [c.dirname for c in lock.charts() if not layout.chart_dir(c.name, c.version).is_dir()]
    if missing:
        log(f"vendoring what the lock pins first: {', '.join(missing)}")
        vendor.sync()
    Renderer(layout, tools, layout.rendered_dir).render(envs)
    return envs, layout.rendered_dir
