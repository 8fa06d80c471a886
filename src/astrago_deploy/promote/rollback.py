"""`inv env.rollback ENV [--to REF]`: one new commit on a stage's branch whose tree is exactly
the tree of a commit that was on that branch before.

The branch is never rewound: the rollback commit's parent is the branch's tip, so it moves
forward (`refs.apply`, no force) and is tagged like a promotion. It carries a
`Rollback-To: <sha>` trailer, by which `env.status` tells it from a hotfix and `env.backport`
merges it into the predecessors as history only (rolling back prod never rolls back dev).
REF defaults to the stage's previous promotion: its newest promotion tag not on the tip.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from astrago_deploy.core.errors import InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.http import Fetcher
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments, promotion
from astrago_deploy.model.promotion import ROLLBACK_TRAILER, PromotionPath, Stage
from astrago_deploy.promote import pull_request, refs

LABELS = ["rollback"]


@dataclass
class Rollback:
    stage: Stage
    remote: bool
    old: str  # the branch's tip rolled back from
    target: str  # the commit whose tree is restored
    label: str  # how REF is named in messages: a tag name or a short sha
    commit: str = ""  # the rollback commit ("" when nothing was made: a dry run, nothing to do)
    tag: str = ""
    pull_request: str = ""
    head_branch: str = ""
    nothing_to_do: bool = False


def rollback_stage(layout: RepoLayout, path: PromotionPath, name: str) -> Stage:
    """The stage `name` names; a customer site is refused naming the stage it deploys from."""
    if name not in path.names:
        env = environments.get(layout, name)  # an unknown name: the error lists the known ones
        if env.customer:
            last = path.last.name
            raise InputError(
                f"{name} is a customer site, which deploys from {last}'s branch: roll back {last} "
                f"(inv env.rollback {last}); nothing was changed"
            )
    return path.stage(name)


def resolve(repo: GitRepo, ref: str) -> str:
    """The commit `ref` names; a one-line error when it names none or is ambiguous."""
    if not ref or ref.startswith("-"):
        raise InputError(f"invalid ref {ref!r}")
    result = repo.call("rev-parse", "--verify", f"{ref}^{{commit}}", ok=frozenset({0, 1, 128}))
    if "ambiguous" in result.stderr:
        raise InputError(
            f"{ref!r} is ambiguous (it names more than one branch, tag or object): give a full ref such as "
            f"refs/tags/{ref} or a longer sha; nothing was changed"
        )
    if result.returncode != 0:
        raise InputError(f"{ref!r} does not name a commit; nothing was changed")
    return result.stdout.strip()


def default_target(repo: GitRepo, stage: Stage, tip: str) -> promotion.PromotionTag:
    for tag in reversed(promotion.promotion_tags(repo, stage.name)):
        if tag.commit != tip:
            return tag
    raise InputError(
        f"{stage.name} has no promotion tag before its tip: name what to roll back to with --to REF; "
        "nothing was changed"
    )


def _label(repo: GitRepo, stage: Stage, ref: str, commit: str) -> str:
    """A tag's name when REF names a tag; else the stage's newest promotion tag on the commit;
    else its short sha."""
    if ref.startswith("refs/tags/") or not ref.startswith("refs/"):
        name = ref.removeprefix("refs/tags/")
        if ".." not in name and repo.ref_value(f"refs/tags/{name}"):
            return name
    tags = promotion.tags_at(repo, stage.name, commit)
    return tags[-1].name if tags else commit[:12]


def _tree(repo: GitRepo, commit: str) -> str:
    return repo.run("rev-parse", f"{commit}^{{tree}}").strip()


def rollback(
    layout: RepoLayout,
    env: str,
    to: str | None = None,
    *,
    pull_requests: bool = True,
    dry_run: bool = False,
    environ: Mapping[str, str] | None = None,
    fetcher: Fetcher | None = None,
) -> Rollback:
    """Roll stage `env` back to REF's tree (default: its previous promotion tag)."""
    environ = os.environ if environ is None else environ
    path = promotion.load(layout)
    stage = rollback_stage(layout, path, env)
    repo = GitRepo(layout.root)
    remote = promotion.refresh(repo, path)
    branch = promotion.branch_ref(repo, stage, remote)
    tip = repo.ref_value(branch)
    if not tip:
        name = branch.removeprefix("refs/")
        raise InputError(f"{name} does not exist (create the stage branches with `inv env.branches`)")
    if to is None:
        tag = default_target(repo, stage, tip)
        target, label = tag.commit, tag.name
    else:
        target = resolve(repo, to)
        label = _label(repo, stage, to, target)
    if not repo.is_ancestor(target, tip):
        raise InputError(
            f"{label} ({target[:12]}) was never on {stage.name}: it is not in the history of "
            f"{branch.removeprefix('refs/')}; nothing was changed"
        )
    result = Rollback(stage, remote, tip, target, label)
    tree = _tree(repo, target)
    if tree == _tree(repo, tip):
        result.nothing_to_do = True
        return result
    if dry_run:
        return result
    subject = f"rollback {stage.name} to {label}"
    why = f"Restores the tree of {target[:12]} on {stage.branch}; the history since {target[:12]} is kept."
    commit = repo.run(
        "commit-tree", tree, "-p", tip, "-m", subject, "-m", why, "-m", f"{ROLLBACK_TRAILER}: {target}"
    ).strip()
    result.commit = commit
    target_pr = pull_request.github_target(repo, environ, fetcher) if pull_requests and remote else None
    if target_pr is not None and stage.pull_request:
        result.head_branch = f"rollback/{stage.name}-{commit[:12]}"
        body = (f"Rolls `{stage.branch}` back to the tree of `{label}` (`{target}`) with one new commit "
                f"made by `inv env.rollback`; nothing is rewritten.\n\n{ROLLBACK_TRAILER}: {target}\n")  # fmt: skip
        result.pull_request = pull_request.open_pull_request(
            repo, target_pr, result.head_branch, commit, stage.branch, subject, body, LABELS
        )
        return result
    result.tag = refs.tag_name(repo, stage, remote)
    charts = promotion.chart_versions(repo, commit)
    message = f"{subject}\n\n{ROLLBACK_TRAILER}: {target}\n\ncharts:\n" + "".join(
        f"  {name} {version}\n" for name, version in sorted(charts.items())
    )
    refs.apply(repo, refs.Move(stage, tip, commit, result.tag, message), remote)
    return result
