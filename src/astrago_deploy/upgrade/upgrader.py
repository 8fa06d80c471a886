"""`inv charts.upgrade`: one command from "a new upstream version exists" to a reviewable branch.

The work happens in a temporary git worktree on a detached HEAD, so the checkout the engineer
runs it from is never touched. Only when the commit (the lock and the report) is complete is
branch `chart/NAME-VERSION` created, expecting it absent (compare-and-swap): a refusal, a
failure or an interrupt leaves no branch at all, and a killed run's marked worktree is pruned
by the next sync or upgrade. Vendored charts never enter git. Steps: refuse a dirty tree;
resolve the target; render every environment before; vendor the new version (sync's rules)
and edit the lock; drop the old vendored folder; check every patch; render every environment
after; write the report; commit; create the branch; optionally push and open a pull request
(into the first stage's branch once the stage branches exist, as every change enters the path there).
This module runs the steps in order; each lives in its own module (`plan`, `prepare`, `vendor`,
`analyze`, `report`, `commit`, `publish`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from astrago_deploy.charts.index import IndexCache
from astrago_deploy.charts.vendor import ChartVendor
from astrago_deploy.core import atomic
from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.leftovers import prune_leftovers
from astrago_deploy.model import promotion
from astrago_deploy.model.environments import Environment
from astrago_deploy.toolchain.pinned import PinnedTools
from astrago_deploy.upgrade import analyze
from astrago_deploy.upgrade import report as upgrade_report
from astrago_deploy.upgrade.commit import commit_upgrade
from astrago_deploy.upgrade.plan import UpgradeOptions, UpgradePlan, check_json_file, plan_upgrade
from astrago_deploy.upgrade.prepare import render_before
from astrago_deploy.upgrade.publish import open_pull_request
from astrago_deploy.upgrade.vendor import vendor_new_version


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
        check_json_file(options.json_file)
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
        prune_leftovers(self.layout)  # what a killed sync or upgrade left
        if self.repo.is_dirty():
            raise InputError("the working tree has uncommitted changes: commit or stash them first (nothing was done)")
        vendor = ChartVendor(self.layout, self.fetcher, indexes=self.indexes)
        plan = plan_upgrade(self.layout, vendor, options, self.log)
        if plan is None:
            return None
        chart, target, branch = plan.chart, plan.target, plan.branch
        start = self.repo.resolve("HEAD")
        base_branch = self.pull_request_base()
        ref = f"refs/heads/{branch}"
        if not options.dry_run and (tip := self.repo.ref_value(ref)):
            raise InputError(
                f"branch {branch} already exists (at {tip[:12]}): review it, or delete it "
                f"(`git branch -D {branch}`) to run the upgrade again"
            )
        self.log(f"upgrading {chart.name} {chart.version} -> {target} on branch {branch}")

        work = self.layout.cache_dir / "upgrades" / branch.replace("/", "_")
        t = time.monotonic()
        # A dry run leaves rendered/ and charts/external/ as they are: its "before" goes with its report.
        before_dir = work / "before" if options.dry_run else self.layout.rendered_dir
        envs, before = render_before(self.layout, vendor, self.tools, self.log, before_dir, not options.dry_run)
        timings["render before"] = time.monotonic() - t
        commit = ""
        worktrees = self.layout.cache_dir / "worktrees"
        with self.repo.temp_worktree(start, worktrees, f"charts.upgrade {branch}") as tree_path:
            tree = RepoLayout.at(tree_path)
            report, paths = self._upgrade_in(tree, plan, envs, before, work, timings)
            if options.dry_run:
                md, js = paths
                final_md, final_js = work / md.name, work / js.name
                work.mkdir(parents=True, exist_ok=True)
                md.replace(final_md)
                js.replace(final_js)
            else:
                commit = commit_upgrade(tree, chart.name, chart.version, target, report)
                # Last, and only if nobody made the branch meanwhile: a refusal leaves our commit
                # unreferenced and every ref as it was.
                self.repo.create_ref(ref, commit, f"charts.upgrade: {chart.name} {chart.version} -> {target}")
                final_md = self.layout.reports_dir / "upgrades" / paths[0].name
                final_js = self.layout.reports_dir / "upgrades" / paths[1].name
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
            result.pull_request = open_pull_request(
                self.repo, self.environ, branch, commit, base_branch, report, work, self.fetcher
            )
        timings["total"] = time.monotonic() - started
        return result

    def pull_request_base(self) -> str:
        """The branch the pull request targets: the first stage's, where changes enter the
        promotion path, once the stage branches exist (on origin, or locally without one); before
        that, the branch checked out."""
        if (self.layout.root / promotion.PROMOTION_FILE).is_file():
            path = promotion.load(self.layout)
            if promotion.stage_branches_exist(self.repo, path):
                return path.first.branch
        return self.repo.current_branch()

    def _upgrade_in(
        self,
        tree: RepoLayout,
        plan: UpgradePlan,
        envs: list[Environment],
        before: Path,
        work: Path,
        timings: dict[str, float],
    ) -> tuple[upgrade_report.UpgradeReport, tuple[Path, Path]]:
        """Steps 3 and 4 in the worktree `tree`: vendor, analyze, write the report there."""
        chart, target = plan.chart, plan.target
        t = time.monotonic()
        vendor_new_version(self.layout, tree, self.fetcher, self.indexes, chart, target)
        timings["vendor"] = time.monotonic() - t
        self.log(f"vendored {chart.name} {target}; checking patches and rendering every environment")

        t = time.monotonic()
        patches = analyze.check_patches(tree, plan.releases, self.tools)
        timings["patches"] = time.monotonic() - t

        t = time.monotonic()
        after = work / "after"
        notes = analyze.render_after(tree, self.tools, envs, after)
        timings["render after"] = time.monotonic() - t
        if notes:  # "after" is without patches: so must "before" be
            t = time.monotonic()
            before = analyze.render_before_unpatched(self.layout, self.tools, envs, work / "before-unpatched")
            timings["render before without patches"] = time.monotonic() - t

        report = analyze.build_report(self.layout, tree, plan, envs, before, after, patches, notes)
        stem = f"{chart.name}-{chart.version}-to-{target}"
        shown = str((work / "full.diff").relative_to(self.layout.root))
        md, js = report.write(tree.reports_dir / "upgrades", stem, work / "full.diff", shown)
        return report, (md, js)
