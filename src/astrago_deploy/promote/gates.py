"""The gates a promotion candidate passes before any ref moves, run in a temporary worktree of
the candidate (the user's checkout is never touched): charts.verify, render and validate of the
target environment (and every customer site when the target is the last stage), patches.check.

The worktree gets its vendored charts from this checkout when their content digests match its
lock (vendored through the mirror otherwise) and the checkout's pinned tools, so the gates run
offline exactly as `inv charts.verify render validate patches.check` would on that commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core import diagnostics
from astrago_deploy.core.diagnostics import format_diagnostic
from astrago_deploy.core.errors import AstragoError
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.patches import check as patch_check
from astrago_deploy.patches.kustomize import PatchStatus
from astrago_deploy.render.diff import prepare_vendored
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools, share_tools
from astrago_deploy.validate import validation


@dataclass(frozen=True)
class Gate:
    name: str
    ok: bool
    summary: str
    output: str = ""  # the findings, when it failed
    seconds: float = 0.0

    def as_json(self) -> dict[str, object]:
        return {"gate": self.name, "ok": self.ok, "summary": self.summary, "output": self.output,
                "seconds": round(self.seconds, 2)}  # fmt: skip


@dataclass
class GateRun:
    gates: list[Gate] = field(default_factory=list)
    patches: list[PatchStatus] = field(default_factory=list)
    rendered: Path | None = None  # <env>/<release>.yaml of the candidate

    @property
    def ok(self) -> bool:
        return all(g.ok for g in self.gates)

    def failures(self) -> str:
        return "\n".join(f"{g.name}: {g.summary}\n{g.output}".rstrip() for g in self.gates if not g.ok)


def prepare(layout: RepoLayout, tree: RepoLayout, fetcher: Fetcher) -> None:
    share_tools(layout, tree)
    prepare_vendored(layout, tree, fetcher)


def _timed(run: GateRun, name: str, step: Callable[[], tuple[bool, str, str]]) -> bool:
    started = time.monotonic()
    try:
        ok, summary, output = step()
    except AstragoError as exc:
        ok, summary, output = False, str(exc).splitlines()[0] if str(exc) else type(exc).__name__, str(exc)
    run.gates.append(Gate(name, ok, summary, output, time.monotonic() - started))
    return ok


def run_gates(
    layout: RepoLayout,
    tree: RepoLayout,
    envs: list[str],
    tools: PinnedTools,
    fetcher: Fetcher,
    log: Callable[[str], None] = lambda _m: None,
) -> GateRun:
    """Every gate on `tree` (prepared by `prepare`); a failed gate stops the ones that need it."""
    run = GateRun(rendered=tree.rendered_dir)

    def verify() -> tuple[bool, str, str]:
        problems = ChartVendor(tree, fetcher).verify()
        text = "\n".join(format_diagnostic(p) for p in problems)
        errors = diagnostics.errors(problems)
        return not errors, f"{len(errors)} problem(s)" if errors else "vendored charts match the lock", text

    def render() -> tuple[bool, str, str]:
        selected = [environments.get(tree, name) for name in envs]
        results = Renderer(tree, tools, tree.rendered_dir, log).render(selected)
        documents = sum(sum(r.releases.values()) for r in results)
        return True, f"{', '.join(envs)}: {documents} documents", ""

    def validate() -> tuple[bool, str, str]:
        findings = validation.validate_rendered(tree, envs)
        errors = diagnostics.errors(findings)
        text = "\n".join(format_diagnostic(f) for f in errors)
        return not errors, f"{len(errors)} error(s), {len(findings) - len(errors)} warning(s)", text

    def patches() -> tuple[bool, str, str]:
        run.patches = patch_check.check_patches(tree, (), envs, tools)
        bad = [p for p in run.patches if not p.ok]
        text = "\n".join(f"{p.status:8} {p.patch} -> {p.target} ({p.env}): {p.reason}" for p in bad)
        applied = len(run.patches) - len(bad)
        return not bad, f"{applied} applied, {len(bad)} stale or failed" if run.patches else "no patches", text

    log("gate: charts.verify")
    _timed(run, "charts.verify", verify)
    log(f"gate: render {', '.join(envs)}")
    if _timed(run, "render", render):
        log("gate: validate")
        _timed(run, "validate", validate)
    log("gate: patches.check")
    _timed(run, "patches.check", patches)
    return run
