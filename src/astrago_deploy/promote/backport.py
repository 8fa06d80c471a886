"""`inv env.backport`: restoring containment after drift by merging each later stage's branch
into its predecessor, up the path (prod -> stage, then stage -> dev).

Every back-merge is a merge commit whose first parent is the predecessor's tip and which
carries a `Backport-Of: <merged commit>` trailer; history is never rewritten. A rollback
commit (`Rollback-To:`) is merged with `-s ours`, recording the history only: the
predecessor's tree stays as it was, so rolling back prod never rolls back stage or dev. The
drift is therefore merged in steps split at its rollbacks: the rollback's parent normally, the
rollback `-s ours`, then the rest normally.

Everything is merged first, each predecessor in its own temporary worktree (the user's
checkout untouched), stage -> dev merging the commit prod -> stage just made. Only when every
merge succeeded do branches move, each through `refs.apply` (forward only; to origin, one
atomic push per branch, prod -> stage first): a conflict anywhere leaves every ref as it was.
A run killed between two moves leaves the earlier predecessor merged; its new merge commit is
then that branch's drift, which the next run merges on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.leftovers import prune_leftovers, worktrees_dir
from astrago_deploy.model import promotion
from astrago_deploy.model.promotion import BACKPORT_TRAILER, Commit, PromotionPath, Stage
from astrago_deploy.promote import pull_request, refs

NOTHING_TO_DO = "containment holds: nothing to back-merge"
LABELS = ["backport"]
MERGE = "merge"
OURS = "ours"  # history only: the predecessor's tree is kept (a rollback)
# The user's configuration must not change what a back-merge is: no remembered resolutions
# applied silently, no shortlog appended after the trailer.
_MERGE_CONFIG = ("-c", "rerere.enabled=false", "-c", "merge.log=false")


class BackportConflict(AstragoError):
    """A back-merge does not merge cleanly; nothing was changed."""

    def __init__(self, source: Stage, target: Stage, merged: Commit, files: list[str]) -> None:
        self.files = files
        super().__init__(
            f"back-merging {source.branch} into {target.branch} conflicts in {', '.join(files) or '(unknown files)'} "
            f"(merging {merged.sha[:12]} {merged.subject!r}): merge {source.branch} into {target.branch} by hand "
            f"with a '{BACKPORT_TRAILER}: <merged sha>' trailer; nothing was changed"
        )


@dataclass(frozen=True)
class MergeStep:
    merged: Commit  # the commit this step merges
    strategy: str  # MERGE, or OURS for a rollback
    brings: list[Commit]  # the drift commits it brings into the predecessor
    commit: str  # the merge commit made


@dataclass
class BackMerge:
    """The drift of `source` merged into its predecessor `target`."""

    source: Stage
    target: Stage
    old: str  # target's tip as read
    source_tip: str
    drift: list[Commit]
    steps: list[MergeStep]
    pull_request: str = ""  # the URL, when one was opened instead of moving target
    head_branch: str = ""  # the branch pushed for that pull request

    @property
    def new(self) -> str:
        return self.steps[-1].commit if self.steps else self.old

    def summary(self) -> str:
        lines = [f"{self.source.branch} -> {self.target.branch}: {len(self.drift)} commit(s), "
                 f"{self.old[:12]} -> {self.new[:12]}"]  # fmt: skip
        for commit in self.drift:
            note = " (history only: tree kept)" if commit.kind == "rollback" else ""
            lines.append(f"  {commit.sha[:12]} {commit.kind:8} {commit.subject}{note}")
        return "\n".join(lines)


@dataclass
class BackportResult:
    remote: bool
    dry_run: bool
    merges: list[BackMerge] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not self.merges


def steps_for(repo: GitRepo, drift: list[Commit], source_tip: str) -> list[tuple[str, str]]:
    """(commit, strategy) in merge order: split at each rollback (its parent normally, the
    rollback history-only), then the source's tip normally. Steps already contained when their
    turn comes are skipped by the caller."""
    steps: list[tuple[str, str]] = []
    for commit in drift:
        if commit.kind == "rollback":
            parents = repo.run("rev-list", "--parents", "-n", "1", commit.sha, "--").split()[1:]
            steps += [(parent, MERGE) for parent in parents]
            steps.append((commit.sha, OURS))
    steps.append((source_tip, MERGE))
    return steps


def merge_message(source: Stage, target: Stage, merged: str, strategy: str, brings: list[Commit]) -> str:
    if strategy == OURS:
        subject = f"backport {source.branch} into {target.branch}: {merged[:12]}, a rollback, as history only"
        why = (f"The rollback is recorded, {target.branch}'s tree is kept: rolling back {source.branch} "
               f"does not roll back {target.branch}.")  # fmt: skip
    else:
        subject = f"backport {source.branch} into {target.branch}: {len(brings)} commit(s)"
        why = f"Restores containment ({source.branch} contained in {target.branch}) after drift on {source.branch}."
    listed = "\n".join(f"{c.sha[:12]} {c.subject}" for c in brings)
    return f"{subject}\n\n{why}\n\n{listed}\n\n{BACKPORT_TRAILER}: {merged}\n"


def _conflicted_files(worktree: GitRepo) -> list[str]:
    out = worktree.run("diff", "--name-only", "--diff-filter=U", "-z")
    return sorted(name for name in out.split("\0") if name)


def back_merge(
    repo: GitRepo, layout: RepoLayout, source: Stage, target: Stage, target_tip: str, source_tip: str
) -> BackMerge | None:
    """Merge `source_tip`'s drift into `target_tip` in a temporary worktree; None when there is
    none. The merge commits are made (objects only); no ref is moved."""
    drift = promotion.commits(repo, source_tip, target_tip, drift=True)
    if not drift:
        return None
    by_sha = {c.sha: c for c in drift}
    made: list[MergeStep] = []
    with repo.temp_worktree(target_tip, worktrees_dir(layout), "env.backport") as path:
        worktree = GitRepo(path)
        try:
            head = target_tip
            for sha, strategy in steps_for(repo, drift, source_tip):
                if repo.is_ancestor(sha, head):
                    continue
                brings = promotion.commits(repo, sha, head, drift=True)
                merged = by_sha.get(sha) or promotion.tip(repo, sha)
                message = merge_message(source, target, sha, strategy, brings)
                args = [*_MERGE_CONFIG, "merge", "--no-ff", "--no-edit", "--no-verify", "--no-log", "-m", message]
                args += ["-s", "ours"] if strategy == OURS else []
                result = worktree.call(*args, sha, ok=frozenset({0, 1}))
                if result.returncode != 0:
                    files = _conflicted_files(worktree)
                    worktree.call("merge", "--abort", ok=frozenset({0, 128}))
                    if not files:
                        why = (result.stderr or result.stdout).strip()
                        failed = f"git merge of {sha[:12]} into {target.branch} failed"
                        raise AstragoError(f"{failed}: {why}; nothing was changed")
                    raise BackportConflict(source, target, merged, files)
                head = worktree.run("rev-parse", "HEAD").strip()
                made.append(MergeStep(merged, strategy, brings, head))
        finally:
            worktree.close()
    return BackMerge(source, target, target_tip, source_tip, drift, made)


def plan(repo: GitRepo, layout: RepoLayout, path: PromotionPath, tips: dict[str, str]) -> list[BackMerge]:
    """Every back-merge up the path, from the last stage's predecessor to the first stage; each
    merges the source's new tip when the source was itself just merged into."""
    tips = dict(tips)
    merges: list[BackMerge] = []
    for position in range(len(path.stages) - 1, 0, -1):
        source, target = path.stages[position], path.stages[position - 1]
        merge = back_merge(repo, layout, source, target, tips[target.name], tips[source.name])
        if merge is not None:
            merges.append(merge)
            tips[target.name] = merge.new
    return merges


def _check_unmoved(repo: GitRepo, merges: list[BackMerge], remote: bool) -> None:
    """Refuse before moving anything when a branch is no longer where it was read."""
    for merge in merges:
        ref = merge.target.ref
        found = repo.remote_value("origin", ref) if remote else repo.ref_value(ref)
        if found != merge.old:
            where = "origin's " if remote else ""
            raise InputError(
                f"{where}{merge.target.branch} moved since it was read ({merge.old[:12]} -> {found[:12] or 'absent'}), "
                "a concurrent change: run `inv env.backport` again; nothing was changed"
            )


def backport(
    layout: RepoLayout,
    *,
    pull_requests: bool = True,
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
    fetcher: Fetcher | None = None,
    progress: Callable[[str], None] | None = None,
) -> BackportResult:
    """Merge drift back up the path and publish it: move each predecessor (or open a pull request
    into it, where its stage wants one and GitHub is reachable)."""
    environ = os.environ if environ is None else environ
    tell = progress or (lambda _message: None)
    prune_leftovers(layout)  # what a killed run left in .cache/worktrees
    path = promotion.load(layout)
    repo = GitRepo(layout.root)
    remote = promotion.refresh(repo, path)
    state = promotion.read_state(repo, path, remote)
    missing = [s.ref.removeprefix("refs/") for s in state.stages.values() if not s.exists]
    if missing:
        raise InputError(f"stage branch(es) missing: {', '.join(missing)} (create them with `inv env.branches`)")
    tips = {name: s.tip.sha for name, s in state.stages.items() if s.tip is not None}
    result = BackportResult(remote, dry_run, plan(repo, layout, path, tips))
    if dry_run or result.nothing_to_do:
        return result
    target = pull_request.github_target(repo, environ, fetcher) if pull_requests and remote else None
    _check_unmoved(repo, result.merges, remote)
    for merge in result.merges:
        if target is not None and merge.target.pull_request:
            merge.head_branch = f"backport/{merge.target.name}-{merge.new[:12]}"
            title = f"Backport {merge.source.branch} into {merge.target.branch} ({len(merge.drift)} commit(s))"
            body = ("Restores containment: merges the drift of "
                    f"`{merge.source.branch}` into `{merge.target.branch}` (`inv env.backport`).\n\n"
                    + "\n".join(f"- `{c.sha[:12]}` {c.kind}: {c.subject}" for c in merge.drift) + "\n")  # fmt: skip
            merge.pull_request = pull_request.open_pull_request(
                repo, target, merge.head_branch, merge.new, merge.target.branch, title, body, LABELS
            )
            tell(f"opened {merge.pull_request} ({merge.head_branch} -> {merge.target.branch})")
            continue
        refs.apply(repo, refs.Move(merge.target, merge.old, merge.new, "", ""), remote)
        tell(f"moved {'origin/' if remote else ''}{merge.target.branch} {merge.old[:12]} -> {merge.new[:12]}")
    return result
