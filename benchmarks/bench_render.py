"""Benchmark: `inv render --all` against plain `helmfile template` per environment one after
another (the same helmfile, post-renderer and vendored charts), both timed in this run, cold
(a new output folder) and warm (nothing changed), as speed-ups; then `inv validate` of every
rendered environment. Prints figures only: the tests assert what renders and validation
produce, never how fast."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ROOT, median, mirror, scratch_project, timed

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.model import environments
from astrago_deploy.render.renderer import Renderer, parallelism
from astrago_deploy.toolchain.pinned import PinnedTools
from astrago_deploy.validate import validation

ROUNDS = 5
INV = [sys.executable, "-m", "invoke", "--search-root", str(ROOT)]


def main() -> None:
    source = mirror()
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        layout = scratch_project(Path(tmp) / "repo")
        ChartVendor(layout, Fetcher(mirror=Mirror(source if "://" in source else str(Path(source).resolve())))).sync()
        envs = environments.discover(layout)
        tools = PinnedTools(layout)
        inv_env = {**os.environ, "ASTRAGO_ROOT": str(layout.root)}

        def plain() -> None:
            for env in envs:
                tools.run(
                    "helmfile", ["-f", str(layout.helmfile), "-e", env.name, "template", "--skip-deps"], cwd=layout.root
                )

        def inv_render(out: Path) -> None:
            subprocess.run([*INV, "render", "--all", "--out", str(out)], env=inv_env, check=True, capture_output=True)

        plain_runs: list[float] = []
        cold_runs: list[float] = []
        warm_runs: list[float] = []
        library_cold: list[float] = []
        library_warm: list[float] = []
        # Interleaved, so a change in machine load touches both sides alike.
        for index in range(ROUNDS):
            plain_runs.append(timed(plain))
            out = Path(tmp) / f"out-{index}"
            cold_runs.append(timed(lambda o=out: inv_render(o)))
            warm_runs.append(timed(lambda o=out: inv_render(o)))
            renderer = Renderer(layout, tools, Path(tmp) / f"lib-{index}")
            library_cold.append(timed(lambda r=renderer: r.render(envs)))
            library_warm.append(timed(lambda r=renderer: r.render(envs)))
        Renderer(layout, tools, layout.rendered_dir).render(envs)
        names = [env.name for env in envs]
        validate_runs = [timed(lambda: validation.validate_rendered(layout, names)) for _ in range(3)]
    plain_median = statistics.median(plain_runs)

    def speedup(samples: list[float]) -> float:
        return plain_median / statistics.median(samples)

    print(f"environments: {len(envs)} ({', '.join(e.name for e in envs)}); parallel renders: {parallelism(len(envs))}")
    print(f"plain helmfile template, one env after another: {median(plain_runs)}")
    print(f"inv render --all, cold (new output folder):      {median(cold_runs)}")
    print(f"inv render --all, warm (nothing changed):        {median(warm_runs)}")
    print(f"  the same as library calls, cold:               {median(library_cold)}")
    print(f"  the same as library calls, warm:               {median(library_warm)}")
    print(f"speed-up over plain helmfile, cold inv render:   {speedup(cold_runs):.2f}x (goal 2x)")
    print(f"speed-up over plain helmfile, warm inv render:   {speedup(warm_runs):.1f}x (goal 20x)")
    print(f"  library calls, cold / warm:   {speedup(library_cold):.2f}x / {speedup(library_warm):.0f}x")
    print(f"inv validate, every environment:                 {median(validate_runs)}")


if __name__ == "__main__":
    main()
