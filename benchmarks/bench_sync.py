"""Benchmark: cold sync of every locked chart and a no-op sync (prints figures, asserts nothing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, median, mirror, scratch_project, timed

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.http import Fetcher, Mirror


def main() -> None:
    source = mirror()
    cold, noop, noop_cli = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp:
        layout = scratch_project(Path(tmp) / "repo")
        for _ in range(3):
            shutil.rmtree(layout.external_dir, ignore_errors=True)
            vendor = ChartVendor(
                layout, Fetcher(mirror=Mirror(source) if "://" in source else Mirror(str(Path(source).resolve())))
            )
            cold.append(timed(vendor.sync))
        for _ in range(5):
            noop.append(timed(ChartVendor(layout, Fetcher()).sync))
        env = {**os.environ, "ASTRAGO_ROOT": str(layout.root)}
        for _ in range(3):
            noop_cli.append(
                timed(
                    lambda: subprocess.run(
                        [str(ROOT / ".venv" / "bin" / "inv"), "-r", str(ROOT), "charts.sync"],
                        env=env,
                        check=True,
                        capture_output=True,
                    )
                )
            )
    print(f"charts.sync cold (3 charts from {source}): {median(cold)}")
    print(f"charts.sync no-op (library call):          {median(noop)}")
    print(f"inv charts.sync no-op (whole command):     {median(noop_cli)}")


if __name__ == "__main__":
    main()
