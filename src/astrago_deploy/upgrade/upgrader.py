"""`inv charts.upgrade`: one command from "a new upstream version exists" to a reviewable branch.

The work happens in a temporary git worktree on the new branch `chart/NAME-VERSION`, so the
checkout the engineer runs it from is never touched: on success the branch holds one commit
(the lock and the report); on any failure, or an interrupt, the branch is removed again and
the checkout is exactly as it was. Vendored charts never enter git. Steps: refuse a dirty
tree; resolve the target; render every environment before; vendor the new version (sync's
rules) and edit the lock; drop the old vendored folder; check every patch; render every
environment after; write the report; commit; optionally push and open a pull request.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from astrago_deploy.charts.index import ChartVersion, IndexCache, newest, parse_version
from astrago_deploy.charts.oci import OciChart
from astrago_deploy.charts.values import ChartValues
from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core import atomic, yaml
from astrago_deploy.core.diagnostics import Diagnostic
from astrago_deploy.core.errors import AstragoError, GitError, InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.github import DEFAULT_API, GitHub, github_repository
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments
from astrago_deploy.model.lock import LockedChart, VersionsLock
from astrago_deploy.model.releases import declared_releases
from astrago_deploy.patches import check as patch_check
from astrago_deploy.render.diff import diff_folders, prepare_vendored
from astrago_deploy.render.renderer import Renderer
from astrago_deploy.toolchain.pinned import PinnedTools
from astrago_deploy.upgrade import report as upgrade_report


@dataclass
class UpgradeOptions:
    name: str
    to: str | None = None
    open_pr: bool = True
    json_file: Path | None = None
    dry_run: bool = False


@dataclass
class UpgradeResult:
    chart: str
    old: str
    new: str
    branch: str
    commit: str
    report_md: Path
    report_json: Path
    full_diff: Path
    report: upgrade_report.UpgradeReport
    pull_request: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def resolve_target(vendor: ChartVendor, chart: LockedChart, to: str | None) -> tuple[str, list[ChartVersion]]:
    """The version to upgrade to (as upstream spells it) and the index entries for the changelog."""
    if chart.is_oci:
        tags = vendor.oci.tags(OciChart(chart.repository, chart.name))
        if to:
            if to not in tags:
                raise InputError(f"{chart.name} {to} is not a tag of {chart.repository}")
            return to, []
        stable = newest(tags, str)
        if stable is None:
            raise InputError(f"{chart.repository}/{chart.name} has no stable version")
        return stable, []
    index = vendor.indexes.get(chart.repository)
    versions = index.versions(chart.name, prereleases=True)
    if to:
        return index.find(chart.name, to).version, versions
    top = index.newest(chart.name)
    if top is None:
        raise InputError(f"{chart.name}: the repository index lists no stable version")
    return top.version, versions


class Upgrader:
    def __init__(
        self,
        layout: RepoLayout,
        fetcher: Fetcher,
        log: Callable[[str], None] = lambda _m: None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.layout = layout
        self.fetcher = fetcher
        self.log = log
        self.environ = dict(os.environ if environ is None else environ)
        self.repo = GitRepo(layout.root)
        self.indexes = IndexCache(fetcher)
        self.tools = PinnedTools(layout)

    def run(self, options: UpgradeOptions) -> UpgradeResult | None:
        lock_file = self.layout.cache_dir / "upgrade.lock"
        self.layout.cache_dir.mkdir(parents=True, exist_ok=True)
        try:
            with filelock.FileLock(str(lock_file), timeout=5):
                return self._run(options)
        except filelock.Timeout as exc:
            raise AstragoError(f"another charts.upgrade holds {lock_file}; try again when it ends") from exc

    def _run(self, options: UpgradeOptions) -> UpgradeResult | None:
        timings: dict[str, float] = {}
        started = time.monotonic()
        if self.repo.is_dirty():
            raise InputError("the working tree has uncommitted changes: commit or stash them first (nothing was done)")
        lock = VersionsLock.load(self.layout.lock_file)
        if not lock.has(options.name):
            raise InputError(f"{options.name} is not in charts/versions.lock (known: {', '.join(lock.names())})")
        chart = lock.get(options.name)
        vendor = ChartVendor(self.layout, self.fetcher, indexes=self.indexes)
        target, versions = resolve_target(vendor, chart, options.to)
        old_v, new_v = parse_version(chart.version), parse_version(target)
        if target == chart.version or (old_v is not None and old_v == new_v):
            self.log(f"{chart.name} is already at {chart.version}: nothing to upgrade")
            return None
        if old_v is not None and new_v is not None and new_v < old_v:
            raise InputError(f"{target} is older than the locked {chart.version}: charts.upgrade does not downgrade")
        releases = [r.name for r in declared_releases(self.layout) if r.locked_chart == chart.name]
        branch = f"chart/{chart.name}-{target}"
        start = self.repo.resolve("HEAD")
        base_branch = self.repo.current_branch()
        if not options.dry_run:
            self._clear_leftovers(branch, start)
        self.log(f"upgrading {chart.name} {chart.version} -> {target} on branch {branch}")

        envs = environments.discover(self.layout)
        missing = [c.dirname for c in lock.charts() if not self.layout.chart_dir(c.name, c.version).is_dir()]
        if missing:
            self.log(f"vendoring what the lock pins first: {', '.join(missing)}")
            vendor.sync()
        t = time.monotonic()
        Renderer(self.layout, self.tools, self.layout.rendered_dir).render(envs)
        timings["render before"] = time.monotonic() - t
        before = self.layout.rendered_dir
        work = self.layout.cache_dir / "upgrades" / branch.replace("/", "_")
        created_branch = False
        commit = ""
        try:
            new_branch = None if options.dry_run else branch
            with self.repo.worktree(start, self.layout.cache_dir / "worktrees", new_branch) as tree_path:
                created_branch = not options.dry_run
                tree = RepoLayout.at(tree_path)
                report, paths = self._upgrade_in(tree, chart, target, versions, releases, envs, before, work, timings)
                if options.dry_run:
                    md, js = paths
                    final_md, final_js = work / md.name, work / js.name
                    work.mkdir(parents=True, exist_ok=True)
                    md.replace(final_md)
                    js.replace(final_js)
                else:
                    commit = self._commit(tree, chart.name, chart.version, target, report)
                    final_md = self.layout.reports_dir / "upgrades" / paths[0].name
                    final_js = self.layout.reports_dir / "upgrades" / paths[1].name
        except BaseException:
            if created_branch:
                self._delete_branch(branch)
            raise
        if options.json_file:
            atomic.write_text(options.json_file, json.dumps(report.as_json(), indent=2, default=str) + "\n")
        result = UpgradeResult(
            chart.name,
            chart.version,
            target,
            branch if not options.dry_run else "",
            commit,
            final_md,
            final_js,
            work / "full.diff",
            report,
            timings=timings,
        )
        if not options.dry_run and options.open_pr:
            result.pull_request = self._open_pull_request(branch, base_branch, report, work)
        timings["total"] = time.monotonic() - started
        return result

    # --- steps ------------------------------------------------------------------------------

    def _upgrade_in(
        self,
        tree: RepoLayout,
        chart: LockedChart,
        target: str,
        versions: list[ChartVersion],
        releases: list[str],
        envs: list[environments.Environment],
        before: Path,
        work: Path,
        timings: dict[str, float],
    ) -> tuple[upgrade_report.UpgradeReport, tuple[Path, Path]]:
        t = time.monotonic()
        prepare_vendored(self.layout, tree, self.fetcher)
        tree_vendor = ChartVendor(tree, self.fetcher, indexes=self.indexes)
        new_entry = LockedChart(chart.name, chart.repository, target)
        with atomic.staging_dir(tree.external_dir, "upgrade") as staging:
            staged = tree_vendor.stage_many([new_entry], staging)
            tree_vendor.install(staged)
        tree_lock = VersionsLock.load(tree.lock_file)
        tree_lock.set(staged[0].chart)
        tree_lock.save()
        if not any(c.dirname == chart.dirname for c in tree_lock.charts()):
            atomic.remove_dir(tree.chart_dir(chart.name, chart.version))
        timings["vendor"] = time.monotonic() - t
        self.log(f"vendored {chart.name} {target}; checking patches and rendering every environment")

        t = time.monotonic()
        patch_results = (
            patch_check.check_patches(tree, releases, [], self.tools)
            if any((tree.patches_dir / r).is_dir() for r in releases)
            else []
        )
        patches = [
            {
                "patch": g.patch,
                "target": g.target,
                "status": g.status,
                "reason": g.reason,
                "release": g.release,
                "envs": list(g.envs),
            }
            for g in patch_check.grouped(patch_results)
        ]
        timings["patches"] = time.monotonic() - t

        t = time.monotonic()
        after = work / "after"
        notes = []
        try:
            Renderer(tree, self.tools, after).render(envs)
        except AstragoError as exc:
            notes.append(f"rendering with patches failed after the bump (diffs are without patches): {_headline(exc)}")
            fallback = Renderer(tree, self.tools, after)
            fallback.patches = False
            fallback.render(envs)
        timings["render after"] = time.monotonic() - t

        old_dir = self.layout.chart_dir(chart.name, chart.version)
        new_dir = tree.chart_dir(chart.name, target)
        values = upgrade_report.diff_values(
            ChartValues.load(old_dir).coalesced_defaults(), ChartValues.load(new_dir).coalesced_defaults()
        )
        overrides, unreadable_overrides = self._override_files(tree, releases)
        unreadable: list[Diagnostic] = []
        old_crds = upgrade_report.crds_of_tree(old_dir, unreadable)
        new_crds = upgrade_report.crds_of_tree(new_dir, unreadable)
        for release in releases:
            old_crds |= upgrade_report.crds_of_render(before / envs[0].name, release)
            new_crds |= upgrade_report.crds_of_render(after / envs[0].name, release)
        old_meta = _chart_meta(old_dir)
        new_meta = _chart_meta(new_dir)
        report = upgrade_report.UpgradeReport(
            chart=chart.name,
            release_names=releases,
            old=chart.version,
            new=target,
            old_app=str(old_meta.get("appVersion", "")),
            new_app=str(new_meta.get("appVersion", "")),
            values=values,
            overrides=upgrade_report.affected_overrides(overrides, values),
            unreadable_overrides=unreadable_overrides,
            crds=upgrade_report.diff_crds(old_crds, new_crds),
            images={
                e.name: upgrade_report.diff_images(
                    upgrade_report.images_of_render(before / e.name), upgrade_report.images_of_render(after / e.name)
                )
                for e in envs
            },
            resources={e.name: diff_folders(e.name, before / e.name, after / e.name) for e in envs},
            patches=patches,
            changelog=upgrade_report.changelog(versions, chart.version, target),
            render_notes=notes,
            unreadable=unreadable,
            offline_registries={
                e.name: str(reg) for e in envs if (reg := environments.setting(tree, e, "offline.registry"))
            },
        )
        stem = f"{chart.name}-{chart.version}-to-{target}"
        shown = str((work / "full.diff").relative_to(self.layout.root))
        md, js = report.write(tree.reports_dir / "upgrades", stem, work / "full.diff", shown)
        return report, (md, js)

    def _override_files(
        self, tree: RepoLayout, releases: list[str]
    ) -> tuple[dict[str, dict[str, Any]], list[Diagnostic]]:
        paths: list[Path] = []
        for release in releases:
            candidates = sorted(tree.environments_dir.glob(f"**/releases/{release}.yaml"))
            candidates.append(tree.helmfile_dir / "values" / f"{release}.yaml.gotmpl")
            paths += [path for path in candidates if path.is_file()]
        return upgrade_report.read_overrides(paths, tree.root)

    def _commit(self, tree: RepoLayout, name: str, old: str, new: str, report: upgrade_report.UpgradeReport) -> str:
        repo = GitRepo(tree.root)
        repo.run("add", "--", str(tree.lock_file.relative_to(tree.root)), "reports/upgrades")
        title = f"charts: upgrade {name} {old} -> {new} ({report.bump}, risk {report.risk})"
        body = "\n".join(f"- {line}" for line in report.notable()[1:]) or "- no notable change"
        repo.run("commit", "--quiet", "--no-verify", "-m", title, "-m", body)
        return repo.resolve("HEAD")

    def _open_pull_request(self, branch: str, base: str, report: upgrade_report.UpgradeReport, work: Path) -> str:
        token = self.environ.get("GITHUB_TOKEN", "")
        try:
            remote = self.repo.run("remote", "get-url", "origin").strip()
        except GitError:
            remote = ""
        api_url = self.environ.get("GITHUB_API_URL") or DEFAULT_API
        where = github_repository(remote, api_url, self.environ.get("GITHUB_SERVER_URL")) if remote else None
        if not token or where is None:
            return ""
        self.repo.run("push", "--quiet", "origin", f"{branch}:{branch}")
        api = GitHub(token, api_url, self.fetcher)
        title = f"Upgrade {report.chart} {report.old} -> {report.new} ({report.bump})"
        body = report.markdown(f".cache/upgrades/{work.name}/full.diff")
        labels = [f"semver:{report.bump}", f"risk:{report.risk}", "chart-upgrade"]
        return api.open_pull_request(where[0], where[1], branch, base, title, body, labels).url

    # --- git plumbing ---------------------------------------------------------------------------

    def _clear_leftovers(self, branch: str, start: str) -> None:
        """An interrupted run may have left its branch and worktree: remove them if they hold
        no upgrade commit; refuse if the branch already carries one."""
        result = self.repo.command(
            "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}", ok=frozenset({0, 1})
        ).run()
        self.repo.command("worktree", "prune", ok=frozenset({0, 128})).run()
        if result.returncode != 0:
            return
        tip = result.stdout.strip()
        ahead = self.repo.run("rev-list", "--count", f"{start}..{tip}").strip()
        if ahead != "0":
            raise InputError(
                f"branch {branch} already exists with the upgrade commit {tip[:12]}: review it, or delete it "
                f"(`git branch -D {branch}`) to run the upgrade again"
            )
        self._delete_branch(branch)

    def _delete_branch(self, branch: str) -> None:
        listing = self.repo.run("worktree", "list", "--porcelain")
        path = ""
        for line in listing.splitlines():
            if line.startswith("worktree "):
                path = line.removeprefix("worktree ")
            elif line == f"branch refs/heads/{branch}" and path:
                self.repo.command("worktree", "remove", "--force", path, ok=frozenset({0, 128})).run()
        self.repo.command("worktree", "prune", ok=frozenset({0, 128})).run()
        self.repo.command("branch", "-D", branch, ok=frozenset({0, 1})).run()


def _chart_meta(chart_dir: Path) -> dict[str, object]:
    return yaml.read_mapping(chart_dir / "Chart.yaml")


def _headline(exc: Exception) -> str:
    """The line of a long helmfile error that says what failed (the post-renderer's, if any)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith("post-render "):
            detail = lines[index + 1] if index + 1 < len(lines) else ""
            return f"{line[:200]} {detail[:300]}".strip()
    return lines[-1][:300] if lines else "unknown error"
