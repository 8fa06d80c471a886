"""`inv env.promote TARGET`: move a stage branch forward to a commit its predecessor holds.

Order of checks, each refusing with nothing changed:
1. TARGET is a stage and not the first one (changes land there by pull request).
2. The clone is not shallow; origin's stage branches and tags are fetched when origin exists.
3. The candidate (the predecessor's tip, or `--commit REF`) resolves to exactly one commit
   and is contained in the predecessor's branch: never a skip, never a feature branch.
4. The target has no drift (commits its predecessor lacks): `inv env.backport` first.
5. The candidate is not already in the target ("nothing to promote"; an untagged tip that is
   the candidate gets its promotion tag, which finishes a run killed after its move or a
   merged pull request).
6. The gates pass on the candidate in a temporary worktree (`gates.py`).
Then the body is built (`body.py`, the target's tip rendered in a second worktree) and the
move published (`refs.apply`: one atomic push of branch and tag, or compare-and-swap without
origin), or a pull request opened from `promote/<target>-<shortsha>`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astrago_deploy.core import atomic
from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.leftovers import prune_leftovers
from astrago_deploy.model import environments, promotion
from astrago_deploy.model.promotion import Commit, PathState, Stage
from astrago_deploy.promote import body as promotion_body
from astrago_deploy.promote import gates as promotion_gates
from astrago_deploy.promote import pull_request, refs
from astrago_deploy.render.diff import render_tree
from astrago_deploy.toolchain.pinned import PinnedTools


@dataclass
class PromoteOptions:
    target: str
    commit: str | None = None
    open_pr: bool = True
    dry_run: bool = False
    json_file: Path | None = None
    mirror: str | None = None


@dataclass
class PromoteResult:
    target: str
    candidate: str
    old: str
    outcome: str  # promoted | pull-request | dry-run | nothing | tagged
    tag: str = ""
    pull_request: str = ""
    summary: promotion_body.PromotionSummary | None = None
    gates: promotion_gates.GateRun | None = None
    full_diff: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "candidate": self.candidate,
            "from": self.old or None,
            "outcome": self.outcome,
            "tag": self.tag or None,
            "pull_request": self.pull_request or None,
            "gates": [g.as_json() for g in self.gates.gates] if self.gates else [],
            "summary": self.summary.as_json() if self.summary else None,
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def resolve_strict(repo: GitRepo, ref: str) -> str:
    """The one commit `ref` names; an ambiguous name (a branch and a tag alike, a short id two
    objects share) or one naming nothing is an error."""
    if not ref or ref.startswith("-"):
        raise InputError(f"invalid git ref {ref!r}")
    result = repo.call("rev-parse", "--verify", f"{ref}^{{commit}}", ok=frozenset({0, 1, 128}))
    if "ambiguous" in result.stderr:
        raise InputError(f"{ref!r} is ambiguous ({result.stderr.strip().splitlines()[0]}): give a full commit id")
    if result.returncode != 0 or not result.stdout.strip():
        raise InputError(f"{ref!r} does not name a commit in this repository")
    return result.stdout.strip()


def tag_message(target: str, commits: list[Commit], charts: Mapping[str, str]) -> str:
    lines = [f"promote {target}: {len(commits)} commit(s)", ""]
    lines += [f"- {c.sha[:12]} {c.subject}" for c in commits[-50:]]
    if len(commits) > 50:
        lines.append(f"- ... and {len(commits) - 50} earlier")
    lines += ["", "charts:"] + [f"- {name} {version}" for name, version in sorted(charts.items())]
    return "\n".join(lines)


def drift_error(target: Stage, pred: Stage, drift: list[Commit]) -> InputError:
    shown = ", ".join(f"{c.sha[:12]} ({c.kind}: {c.subject})" for c in drift[:5])
    more = f" and {len(drift) - 5} more" if len(drift) > 5 else ""
    return InputError(
        f"refusing to promote {target.name}: {target.branch} has {len(drift)} commit(s) {pred.branch} lacks: "
        f"{shown}{more}; run `inv env.backport` to merge them back up the path first (nothing was changed)"
    )


class Promoter:
    def __init__(
        self,
        layout: RepoLayout,
        log: Callable[[str], None] = lambda _m: None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.layout = layout
        self.log = log
        self.environ = dict(os.environ if environ is None else environ)
        self.repo = GitRepo(layout.root)
        self.path = promotion.load(layout)

    def state(self, fetch: bool) -> PathState:
        remote = promotion.refresh(self.repo, self.path, fetch)
        return promotion.read_state(self.repo, self.path, remote)

    def run(self, options: PromoteOptions) -> PromoteResult:
        started = time.monotonic()
        if options.json_file is not None and options.json_file.is_dir():
            raise InputError(f"--json {options.json_file} is a folder: give a file path")
        target = self.path.stage(options.target) if options.target in self.path.names else None
        if target is None:
            env = {e.name: e for e in environments.discover(self.layout)}.get(options.target)
            hint = f" (customer sites deploy from {self.path.last.name})" if env and env.customer else ""
            raise InputError(
                f"unknown stage {options.target!r}{hint}; the promotion path is {' -> '.join(self.path.names)}"
            )
        pred = self.path.predecessor(target.name)
        if pred is None:
            raise InputError(
                f"{target.name} is the first stage: changes land on {target.branch} by pull request, not by promotion"
            )
        prune_leftovers(self.layout)
        state = self.state(fetch=True)
        here, before = state.stages[target.name], state.stages[pred.name]
        for stage_state in (before, here):
            if not stage_state.exists:
                raise InputError(
                    f"stage branch {stage_state.stage.branch} does not exist ({stage_state.ref}): "
                    "create the stage branches with `inv env.branches`"
                )
        assert before.tip is not None and here.tip is not None
        candidate = resolve_strict(self.repo, options.commit) if options.commit else before.tip.sha
        if not self.repo.is_ancestor(candidate, before.tip.sha):
            raise InputError(
                f"refusing to promote {candidate[:12]} to {target.name}: it is not on {pred.branch} "
                f"({before.ref.removeprefix('refs/')}); a commit reaches {target.name} only through {pred.name}"
            )
        if here.drift:
            raise drift_error(target, pred, here.drift)
        old = here.tip.sha
        result = PromoteResult(target.name, candidate, old, "nothing")
        if self.repo.is_ancestor(candidate, old):
            if candidate == old and not promotion.tags_at(self.repo, target.name, old) and not options.dry_run:
                message = tag_message(target.name, [], here.charts)
                result.tag = refs.finish(self.repo, target, old, state.remote, message)
                result.outcome = "tagged" if result.tag else "nothing"
            result.timings["total"] = time.monotonic() - started
            self._write_json(options, result)
            return result
        if options.open_pr and target.pull_request and not options.dry_run:
            self._pull_request_target(target)  # refuse before the gates, not after them
        commits = promotion.commits(self.repo, candidate, old)
        self.log(f"promoting {len(commits)} commit(s) {old[:12]}..{candidate[:12]} to {target.name}")
        self._gate_and_summarize(options, target, candidate, old, commits, result)
        assert result.gates is not None and result.summary is not None
        if not result.gates.ok:
            self._write_json(options, result)
            raise AstragoError(
                f"refusing to promote {candidate[:12]} to {target.name}: a gate failed (nothing was changed)\n"
                + result.gates.failures()
            )
        if options.dry_run:
            result.outcome = "dry-run"
        elif options.open_pr and target.pull_request:
            result.pull_request = self._open_pull_request(target, candidate, result)
            result.outcome = "pull-request"
        else:
            result.tag = refs.tag_name(self.repo, target, state.remote)
            charts = promotion.chart_versions(self.repo, candidate)
            move = refs.Move(target, old, candidate, result.tag, tag_message(target.name, commits, charts))
            refs.apply(self.repo, move, state.remote)
            result.outcome = "promoted"
        result.timings["total"] = time.monotonic() - started
        self._write_json(options, result)
        return result

    def _gate_and_summarize(
        self, options: PromoteOptions, target: Stage, candidate: str, old: str, commits: list[Commit],
        result: PromoteResult,
    ) -> None:  # fmt: skip
        tools = PinnedTools(self.layout)
        fetcher = Fetcher.for_mirror(options.mirror)
        work = self.layout.cache_dir / "promotions" / f"{target.name}-{candidate[:12]}"
        worktrees = self.layout.cache_dir / "worktrees"
        with (
            self.repo.temp_worktree(candidate, worktrees, f"env.promote {target.name} {candidate[:12]}") as new_path,
            self.repo.temp_worktree(old, worktrees, f"env.promote {target.name} base {old[:12]}") as old_path,
        ):
            new_tree, old_tree = RepoLayout.at(new_path), RepoLayout.at(old_path)
            envs = self.path.deployed_by(new_tree, target)
            t = time.monotonic()
            promotion_gates.prepare(self.layout, new_tree, fetcher)
            result.timings["prepare"] = time.monotonic() - t
            t = time.monotonic()
            result.gates = promotion_gates.run_gates(self.layout, new_tree, envs, tools, fetcher, self.log)
            result.timings["gates"] = time.monotonic() - t
            for gate in result.gates.gates:
                result.timings[f"gate {gate.name}"] = gate.seconds
            t = time.monotonic()
            old_render: Path | None = None
            try:
                promotion_gates.prepare(self.layout, old_tree, fetcher)
                old_envs = self.path.deployed_by(old_tree, target)
                render_tree(old_tree, tools, old_tree.rendered_dir, old_envs)
                old_render = old_tree.rendered_dir
            except AstragoError as exc:  # the diff then shows everything as added, and says why
                self.log(f"the target's tip {old[:12]} does not render ({str(exc).splitlines()[0]}); diff against none")
            result.timings["render target"] = time.monotonic() - t
            full_diff = work / "full.diff"
            result.full_diff = full_diff
            result.summary = promotion_body.summarize(
                target.name, old, candidate, commits, old_tree, new_tree, old_render, new_tree.rendered_dir, envs,
                result.gates.patches, full_diff,
            )  # fmt: skip

    def _pull_request_target(self, target: Stage) -> pull_request.PullRequestTarget:
        """Where the pull request `target` takes goes; refused when none can be opened."""
        where = pull_request.github_target(self.repo, self.environ)
        if where is None:
            missing = "no GITHUB_TOKEN" if not self.environ.get("GITHUB_TOKEN") else "no GitHub origin"
            raise InputError(
                f"{target.name} takes changes by pull request (environments/promotion.yaml) and there is "
                f"{missing}: set it, or pass --no-pr to fast-forward {target.branch} directly (nothing was changed)"
            )
        return where

    def _open_pull_request(self, target: Stage, candidate: str, result: PromoteResult) -> str:
        where = self._pull_request_target(target)
        assert result.summary is not None
        branch = f"promote/{target.name}-{candidate[:12]}"
        shown = str(result.full_diff.relative_to(self.layout.root)) if result.full_diff else ""
        title = f"Promote {len(result.summary.commits)} commit(s) to {target.name} ({candidate[:12]})"
        labels = ["promotion", f"promote:{target.name}"]
        body = result.summary.markdown(shown)
        return pull_request.open_pull_request(self.repo, where, branch, candidate, target.branch, title, body, labels)

    def _write_json(self, options: PromoteOptions, result: PromoteResult) -> None:
        if options.json_file is not None:
            atomic.write_text(options.json_file, json.dumps(result.as_json(), indent=2, default=str) + "\n")
