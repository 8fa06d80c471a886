"""Tasks: vendor upstream charts under charts/versions.lock (sync, add, verify, outdated, upgrade)."""

from __future__ import annotations

import json
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task

from astrago_deploy.cli import layout_of, say, user_errors, warn
from astrago_deploy.core.errors import AstragoError

MIRROR_HELP = "Root URL or directory laid out <host>/<path>/ standing in for every upstream (or CHARTS_MIRROR)"


@task(
    iterable=["name"],
    help={"name": "Chart to sync (repeatable); default every locked chart", "mirror": MIRROR_HELP},
)
@user_errors
def sync(ctx: Context, name: list[str] | None = None, mirror: str | None = None) -> None:
    """Vendor every locked chart into charts/external, verified against the lock."""
    from astrago_deploy.charts.vendor import default_vendor
    from astrago_deploy.core.console import ConsoleProgress

    vendor = default_vendor(layout_of(ctx), mirror, ConsoleProgress(), warn)
    for result in vendor.sync(name or None):
        say(f"{result.name:20} {result.version:12} {result.action}")


@task(
    help={
        "name": "Chart name as the repository names it",
        "repo": "Helm repository URL (https://...) or OCI location (oci://host/path)",
        "version": "Exact version as upstream spells it (e.g. v25.3.4)",
        "release": "Also scaffold a release of this name in its tier, with an empty values file",
        "namespace": "Namespace of the scaffolded release (default: the release name)",
        "tier": "Tier of the scaffolded release: infrastructure, monitoring, security, applications",
        "mirror": MIRROR_HELP,
    }
)
@user_errors
def add(
    ctx: Context,
    name: str,
    repo: str,
    version: str,
    release: str | None = None,
    namespace: str | None = None,
    tier: str = "applications",
    mirror: str | None = None,
) -> None:
    """Lock and vendor a new upstream chart; with --release, scaffold its release too."""
    from astrago_deploy.charts import scaffold
    from astrago_deploy.charts.vendor import default_vendor
    from astrago_deploy.core.console import ConsoleProgress

    layout = layout_of(ctx)
    plan = scaffold.plan_release(layout, release, name, namespace or release or "", tier) if release else None
    chart = default_vendor(layout, mirror, ConsoleProgress(), warn).add(name, repo, version)
    say(f"locked and vendored {chart.name} {chart.version} ({chart.digest})")
    if plan is not None:
        for path in scaffold.apply(plan):
            say(f"wrote {path.relative_to(layout.root)}")


@task
@user_errors
def verify(ctx: Context) -> None:
    """Offline: vendored trees match the lock, no folder missing or extra, releases use locked charts."""
    from astrago_deploy.charts.vendor import default_vendor
    from astrago_deploy.core.diagnostics import format_diagnostic

    problems = default_vendor(layout_of(ctx), None).verify()
    for problem in problems:
        say(format_diagnostic(problem))
    if problems:
        raise AstragoError(f"charts.verify found {len(problems)} problem(s)")
    say("charts.verify: vendored charts, lock and releases agree")


@task(
    help={
        "json": "Print JSON instead of a table",
        "prereleases": "Consider pre-release versions",
        "mirror": MIRROR_HELP,
    }
)
@user_errors
def outdated(ctx: Context, json_: bool = False, prereleases: bool = False, mirror: str | None = None) -> None:
    """Per chart: locked version, newest stable, newest in the same major, semver distance."""
    from astrago_deploy.charts.vendor import default_vendor

    rows = default_vendor(layout_of(ctx), mirror).outdated(prereleases)
    if json_:
        say(json.dumps([row.as_json() for row in rows], indent=2))
        return
    say(f"{'chart':20} {'locked':12} {'newest':12} {'same major':12} distance")
    for row in rows:
        say(f"{row.name:20} {row.locked:12} {row.newest:12} {row.newest_same_major:12} {row.distance}")


@task(
    help={
        "name": "Locked chart to upgrade",
        "to": "Exact version to upgrade to, as upstream spells it (default: the newest stable)",
        "no_pr": "Do not push or open a pull request",
        "json": "Also write the JSON report to this file (its folder must exist)",
        "dry_run": "Do everything in a throw-away worktree: report only (under .cache/), no branch, no commit",
        "mirror": MIRROR_HELP,
    }
)
@user_errors
def upgrade(
    ctx: Context,
    name: str,
    to: str | None = None,
    no_pr: bool = False,
    json_: str | None = None,
    dry_run: bool = False,
    mirror: str | None = None,
) -> None:
    """Bump a chart on a new branch chart/NAME-VERSION with an impact report (and a pull request)."""
    from astrago_deploy.core.http import Fetcher
    from astrago_deploy.upgrade.plan import UpgradeOptions
    from astrago_deploy.upgrade.upgrader import Upgrader

    layout = layout_of(ctx)
    fetcher = Fetcher.for_mirror(mirror)
    options = UpgradeOptions(name, to, not no_pr, Path(json_).resolve() if json_ else None, dry_run)
    result = Upgrader(layout, fetcher, warn).run(options)
    if result is None:
        return
    report = result.report
    for line in report.notable():
        say(line)
    say(f"risk: {report.risk}")
    if dry_run:
        say(f"dry run: report in {result.report_md} (nothing committed)")
    else:
        say(
            f"branch {result.branch}: commit {result.commit[:12]} (you are still on your starting branch; "
            f"to work on it: git switch {result.branch} && inv charts.sync)"
        )
        say(f"report: {result.report_md.relative_to(layout.root)} (on the branch); full diff: {result.full_diff}")
        if result.pull_request:
            say(f"pull request: {result.pull_request}")
        elif not no_pr:
            say(
                "no pull request: set GITHUB_TOKEN (with an origin remote on GitHub; for GitHub Enterprise also "
                "GITHUB_API_URL or GITHUB_SERVER_URL) to open one, or push the branch and open it by hand with "
                "the report as its body"
            )
    if options.json_file:
        say(f"JSON report: {options.json_file}")


ns = Collection("charts", sync, add, verify, outdated, upgrade)
