"""`inv env.branches`: create the stage branches that do not exist yet, never move one.

A new repository (or one that has just adopted `environments/promotion.yaml`) has no `dev`,
`stage` or `prod` branch. This creates the missing ones at one commit, on origin (one atomic
push of new refs only, so an existing branch there is never touched) and locally. A branch that
exists on one side only is copied to the other at the value it already has, not at REF: local
and origin never start out apart. Every check runs before anything is created: REF must keep
containment with the branches that already exist (contained in the predecessor's branch,
containing the successor's), otherwise nothing is created and the error says why.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from astrago_deploy.core.errors import InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.model import promotion
from astrago_deploy.model.promotion import PromotionPath, Stage


@dataclass(frozen=True)
class BranchPlan:
    """What happens to one stage's branch: `local`/`origin` are the commit each side holds
    afterwards; `create_local`/`create_origin` say whether this run creates it."""

    stage: Stage
    local: str
    origin: str  # "" when there is no origin
    create_local: bool
    create_origin: bool

    @property
    def commit(self) -> str:
        return self.origin or self.local

    def describe(self, remote: bool) -> str:
        created = [side for side, made in (("local", self.create_local), ("origin", self.create_origin)) if made]
        name = f"{self.stage.name} ({self.stage.branch})" if self.stage.branch != self.stage.name else self.stage.name
        if not created:
            where = "local and origin" if remote else "local"
            return f"{name:16} exists at {self.commit[:12]} ({where}), left as it is"
        return f"{name:16} created at {self.commit[:12]} ({' and '.join(created)})"


def _ancestor(repo: GitRepo, older: str, newer: str) -> bool:
    return repo.call("merge-base", "--is-ancestor", older, newer, ok=frozenset({0, 1})).returncode == 0


def plan(repo: GitRepo, path: PromotionPath, at: str, remote: bool) -> list[BranchPlan]:
    """The branch of every stage after this run, checked for containment before anything moves."""
    commit = repo.resolve(at)
    plans: list[BranchPlan] = []
    for stage in path.stages:
        local = repo.ref_value(stage.ref)
        origin = repo.remote_value("origin", stage.ref) if remote else ""
        if remote and local and origin and local != origin:
            # Both exist: nothing is created, whatever they hold (env.status reports them).
            plans.append(BranchPlan(stage, local, origin, False, False))
            continue
        value = origin or local or commit
        origin_after = origin or (value if remote else "")
        plans.append(BranchPlan(stage, local or value, origin_after, not local, remote and not origin))
    # Containment over the result, judged on the commits origin will hold (local where there is none).
    for earlier, later in itertools.pairwise(plans):
        if not (earlier.create_local or earlier.create_origin or later.create_local or later.create_origin):
            continue
        if not _ancestor(repo, later.commit, earlier.commit):
            made = later if (later.create_local or later.create_origin) else earlier
            raise InputError(
                f"creating {made.stage.branch} at {made.commit[:12]} would break containment: "
                f"{later.stage.branch} ({later.commit[:12]}) must be contained in {earlier.stage.branch} "
                f"({earlier.commit[:12]}); pass --at a commit on {earlier.stage.branch}'s history that "
                f"contains {later.stage.branch}'s; nothing was created"
            )
    return plans


def create(
    repo: GitRepo, path: PromotionPath, at: str = "HEAD", dry_run: bool = False
) -> tuple[list[BranchPlan], bool]:
    """Create the missing stage branches; the plans and whether there is an origin."""
    remote = promotion.refresh(repo, path)
    plans = plan(repo, path, at, remote)
    if dry_run:
        return plans, remote
    pushes = [(p.commit, p.stage.ref) for p in plans if p.create_origin]
    if pushes:
        # New refs only and never forced: a branch someone created meanwhile is refused, not moved.
        repo.push_atomic("origin", pushes)
        promotion.fetch(repo, path)
    for p in plans:
        if p.create_local:
            repo.create_ref(p.stage.ref, p.commit, f"astrago: env.branches {p.stage.name}")
            if remote:
                repo.run("branch", "--quiet", f"--set-upstream-to=origin/{p.stage.branch}", p.stage.branch)
    return plans, remote
