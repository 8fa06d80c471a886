"""Shared set-up for the benchmarks: a scratch copy of the monorepo and the chart mirror."""

from __future__ import annotations

import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from astrago_deploy.layout import RepoLayout

ROOT = Path(__file__).resolve().parent.parent
COPIED = (
    "toolchain.yaml",
    "helmfile",
    "environments",
    "charts/custom",
    "charts/versions.lock",
    "patches",
    "scripts/post-render",
)


def mirror() -> str:
    found = os.environ.get("CHARTS_MIRROR") or str(ROOT.parent / "shared" / "upstream")
    if not Path(found).exists() and "://" not in found:
        raise SystemExit(f"benchmark: no chart mirror at {found}; set CHARTS_MIRROR")
    return found


def scratch_project(dest: Path) -> RepoLayout:
    for rel in COPIED:
        src = ROOT / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel)
        elif src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".tools" / "bin").mkdir(parents=True)
    for binary in ("helm", "helmfile", "kubectl"):
        (dest / ".tools" / "bin" / binary).symlink_to(ROOT / ".tools" / "bin" / binary)
    return RepoLayout.at(dest)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median(samples: list[float]) -> str:
    return (
        f"median {statistics.median(samples):.3f}s (min {min(samples):.3f}s, max {max(samples):.3f}s, n={len(samples)})"
    )
