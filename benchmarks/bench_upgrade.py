"""Benchmark: wall time of a whole `charts.upgrade gpu-operator` across every environment
(render before, vendor, patch check, render after, report, commit); prints figures only."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import IDENTITY, mirror, scratch_project

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.model import environments
from astrago_deploy.upgrade.plan import UpgradeOptions
from astrago_deploy.upgrade.upgrader import Upgrader


def main() -> None:
    source = mirror()
    os.environ.update(IDENTITY)
    fetcher_mirror = Mirror(source if "://" in source else str(Path(source).resolve()))
    for target in ("v25.10.1", "v26.7.0"):
        with tempfile.TemporaryDirectory(prefix="bench-upgrade-") as tmp:
            layout = scratch_project(Path(tmp) / "repo", with_git=True)
            ChartVendor(layout, Fetcher(mirror=fetcher_mirror)).sync()
            started = time.perf_counter()
            result = Upgrader(layout, Fetcher(mirror=fetcher_mirror)).run(
                UpgradeOptions("gpu-operator", target, open_pr=False)
            )
            wall = time.perf_counter() - started
            assert result is not None
            steps = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items() if k != "total")
            envs = len(environments.discover(layout))
            print(
                f"charts.upgrade gpu-operator v25.3.4 -> {target} across {envs} environments: {wall:.1f}s wall "
                f"({steps}); bump {result.report.bump}, risk {result.report.risk}"
            )


if __name__ == "__main__":
    main()
