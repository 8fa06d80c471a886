"""Benchmark: cold `inv render --all` against plain `helmfile template` per environment one after
another, as a ratio, a warm re-render with nothing changed, and `inv validate` of every rendered
environment (prints figures only; the tests assert what validation finds, never how fast)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, mirror, scratch_project, timed

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core.http import Fetcher, Mirror
from astrago_deploy.model import environments
from astrago_deploy.render.renderer import Renderer, parallelism
from astrago_deploy.toolchain.pinned import PinnedTools
from astrago_deploy.validate import validation


def main() -> None:
    source = mirror()
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        layout = scratch_project(Path(tmp) / "repo")
        ChartVendor(layout, Fetcher(mirror=Mirror(source if "://" in source else str(Path(source).resolve())))).sync()
        envs = environments.discover(layout)
        tools = PinnedTools(layout)

        def plain() -> None:
            for env in envs:
                tools.run(
                    "helmfile", ["-f", str(layout.helmfile), "-e", env.name, "template", "--skip-deps"], cwd=layout.root
                )

        plain_runs, cold_runs, warm_runs = [], [], []
        for index in range(3):
            plain_runs.append(timed(plain))
            renderer = Renderer(layout, tools, Path(tmp) / f"out-{index}")
            cold_runs.append(timed(lambda r=renderer: r.render(envs)))
            warm_runs.append(timed(lambda r=renderer: r.render(envs)))
        Renderer(layout, tools, layout.rendered_dir).render(envs)
        names = [env.name for env in envs]
        validate_runs = [timed(lambda: validation.validate_rendered(layout, names)) for _ in range(3)]
    ratio = sorted(cold_runs)[1] / sorted(plain_runs)[1]
    print(f"environments: {len(envs)} ({', '.join(e.name for e in envs)}); parallel renders: {parallelism(len(envs))}")
    print(f"plain helmfile template, one env after another: {median(plain_runs)}")
    print(f"inv render --all, cold:                          {median(cold_runs)}")
    print(f"ratio cold render / plain sequential helmfile:   {ratio:.2f}")
    print(f"inv render --all, warm (nothing changed):        {median(warm_runs)}")
    print(f"inv validate, every environment:                 {median(validate_runs)}")


if __name__ == "__main__":
    main()
