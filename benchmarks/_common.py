"""Shared set-up for the benchmarks: a scratch copy of the monorepo and the chart mirror."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from astrago_deploy.core.layout import RepoLayout

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import make_project  # noqa: E402 - the same scratch copy the tests use

# The git identity the benchmarks commit with.
IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def mirror() -> str:
    found = os.environ.get("CHARTS_MIRROR") or str(ROOT.parent / "shared" / "upstream")
    if not Path(found).exists() and "://" not in found:
        raise SystemExit(f"benchmark: no chart mirror at {found}; set CHARTS_MIRROR")
    return found


def scratch_project(dest: Path, with_git: bool = False) -> RepoLayout:
    """A copy of the monorepo's committed content sharing this checkout's pinned tools."""
    return make_project(dest, with_git=with_git)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median(samples: list[float]) -> str:
    return (
        f"median {statistics.median(samples):.3f}s (min {min(samples):.3f}s, max {max(samples):.3f}s, n={len(samples)})"
    )
