"""Benchmark: wall time of `env.promote stage` and `env.promote prod` with their gates
(charts.verify, render, validate, patches.check of the candidate, the target's tip rendered for
the diff), against a bare origin on disk; prints figures only."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import IDENTITY, mirror, scratch_project

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.promote.promoter import PromoteOptions, Promoter


def git(cwd: Path, *args: str) -> str:
    return GitRepo(cwd).run(*args)


def main() -> None:
    source = mirror()
    os.environ.update(IDENTITY)
    fetcher_mirror = Mirror(source if "://" in source else str(Path(source).resolve()))
    with tempfile.TemporaryDirectory(prefix="bench-promote-") as tmp:
        layout = scratch_project(Path(tmp) / "repo", with_git=True)
        ChartVendor(layout, Fetcher(mirror=fetcher_mirror)).sync()
        root = layout.root
        bare = Path(tmp) / "origin.git"
        git(root, "init", "-q", "--bare", str(bare))
        git(root, "remote", "add", "origin", str(bare))
        for stage in ("dev", "stage", "prod"):
            git(root, "push", "-q", "origin", f"HEAD:refs/heads/{stage}")
        with (root / "environments" / "base" / "values.yaml").open("a", encoding="utf-8") as handle:
            handle.write("# a change to promote\n")
        git(root, "commit", "-qam", "a change")
        git(root, "push", "-q", "origin", "HEAD:refs/heads/dev")
        for target in ("stage", "prod"):
            started = time.perf_counter()
            result = Promoter(layout).run(PromoteOptions(target, open_pr=False))
            wall = time.perf_counter() - started
            steps = ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items() if k != "total")
            print(f"env.promote {target} ({result.outcome}, {result.tag}) with its gates: {wall:.1f}s wall ({steps})")


if __name__ == "__main__":
    main()
