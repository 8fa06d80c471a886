"""Tasks: render every environment offline, validate the output, diff renders against another git ref."""

from __future__ import annotations

import json
from pathlib import Path

from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors, warn
from astrago_deploy.core import diagnostics
from astrago_deploy.core.diagnostics import format_diagnostic
from astrago_deploy.core.errors import AstragoError
from astrago_deploy.render import diff as render_diff
from astrago_deploy.render import renderer as rendering
from astrago_deploy.validate import validation


@task(
    iterable=["env"],
    help={
        "env": "Environment to render (repeatable); default all",
        "all": "Render every environment (the default when no --env is given)",
        "out": "Output folder (default rendered/)",
        "json": "Print documents per release and time per environment as JSON",
        "no_cache": "Render even environments whose inputs did not change",
    },
)
@user_errors
def render(
    ctx: Context,
    env: list[str] | None = None,
    all_: bool = False,
    out: str | None = None,
    json_: bool = False,
    no_cache: bool = False,
) -> None:
    """Render environments with helmfile (offline, vendored charts) into rendered/<env>/<release>.yaml."""
    layout = layout_of(ctx)
    rendering.require_vendored(layout)
    envs = rendering.select_environments(layout, env or [], all_)
    renderer = rendering.default_renderer(layout, Path(out).resolve() if out else None, warn)
    renderer.use_cache = not no_cache
    results = renderer.render(envs)
    if json_:
        say(json.dumps({r.env: r.as_json() for r in results}, indent=2, sort_keys=True))
        return
    for result in results:
        state = "unchanged (cached)" if result.cached else f"rendered in {result.seconds:.1f}s"
        docs = sum(result.releases.values())
        folder = result.out_dir
        where = folder.relative_to(layout.root) if folder.is_relative_to(layout.root) else folder
        say(f"{result.env:16} {len(result.releases)} releases, {docs} documents, {state} -> {where}")
        if result.normalized:
            counts = ", ".join(f"{release} {len(items)}" for release, items in sorted(result.normalized.items()))
            say(
                f"{'':16} normalized generated values (Secret data, checksum/* annotations) so renders "
                f"are reproducible: {counts}"
            )


@task(
    iterable=["env"],
    help={
        "base": "Git ref to compare against (branch, tag, commit)",
        "env": "Environment to compare (repeatable); default all",
        "mirror": "Chart mirror for charts the base ref locks but this checkout has not vendored",
        "stat": "Only list changed resources, without the diffs",
    },
)
@user_errors
def diff(ctx: Context, base: str, env: list[str] | None = None, mirror: str | None = None, stat: bool = False) -> None:
    """Diff the rendered output of a git ref against the working tree, per environment and resource."""
    layout = layout_of(ctx)
    rendering.require_vendored(layout, "diff")
    result = render_diff.compare(layout, base, env or [], mirror)
    for env_diff in result:
        counts = env_diff.counts()
        say(f"=== {env_diff.env}: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed")
        for change in env_diff.changes:
            say(f"{change.change:8} {change.release}: {change.resource}")
            if not stat and change.diff:
                say(change.diff.rstrip("\n"))


@task(
    iterable=["env"],
    help={"env": "Environment to validate (repeatable); default all", "warnings": "Also print warnings"},
)
@user_errors
def validate(ctx: Context, env: list[str] | None = None, warnings: bool = False) -> None:
    """Validate rendered/<env>/ offline: Kubernetes schemas (strict), CRD schemas, offline images."""
    layout = layout_of(ctx)
    names = [e.name for e in rendering.select_environments(layout, env or [], False)]
    findings = validation.validate_rendered(layout, names)
    problems = diagnostics.errors(findings)
    for finding in findings:
        if finding.is_error or warnings:
            say(format_diagnostic(finding))
    notes = len(findings) - len(problems)
    summary = f"validated {', '.join(names)}: {len(problems)} error(s), {notes} warning(s)"
    if problems:
        raise AstragoError(summary)
    say(summary)
