"""The promotion gate CI runs on a pull request (`nox -s promotion`), decided from git alone.

A pull request into a later stage's branch must be a promotion: every commit of its head is
already on the predecessor's branch (a change reaches stage only from dev, prod only from
stage), and the head fast-forwards the target (its tip is an ancestor of the head; a target
with commits of its own has drift, which `inv env.backport` merges back first). A pull request
into the first stage is how changes land at all, and one into any other branch is not a
promotion: both pass. Unlike `gates.py` (render and validate of a candidate before
`env.promote` moves a ref) nothing here needs the tools: only refs and ancestry.

The stages are read from the target branch's own `environments/promotion.yaml`, so a pull
request cannot relax the rules it is judged by; without that file, from the checkout.

`ci_event` says what GitHub Actions asks for: the pull request's base and head, or the branch
a push moved (whose environments CI then renders and validates).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from astrago_deploy.core import files
from astrago_deploy.core.errors import InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import promotion
from astrago_deploy.model.promotion import Commit, PromotionPath, Stage

COMMITS_SHOWN = 10


@dataclass(frozen=True)
class GateResult:
    ok: bool
    base: str  # the target branch
    head: str  # the head's commit id ("" when the base is no stage: it was not resolved)
    messages: tuple[str, ...]


@dataclass(frozen=True)
class PullRequest:
    base: str
    head: str


@dataclass(frozen=True)
class Push:
    branch: str


def _existing_ref(repo: GitRepo, branch: str) -> str:
    """origin's `branch` where there is one (what is deployed), else the local one, else ""."""
    candidates = [f"refs/remotes/origin/{branch}"] if promotion.has_origin(repo) else []
    return next((ref for ref in [*candidates, f"refs/heads/{branch}"] if repo.ref_value(ref)), "")


def _stage_ref(repo: GitRepo, stage: Stage) -> str:
    ref = _existing_ref(repo, stage.branch)
    if not ref:
        raise InputError(
            f"stage branch {stage.branch} is in neither origin/{stage.branch} nor {stage.branch} of this clone: "
            "fetch every branch (actions/checkout with fetch-depth: 0; locally `git fetch origin`)"
        )
    return ref


def path_for(repo: GitRepo, layout: RepoLayout, base: str) -> PromotionPath:
    """The promotion path the target branch `base` declares; the checkout's when it has none."""
    ref = _existing_ref(repo, base)
    data = repo.read_file(ref, promotion.PROMOTION_FILE) if ref else None
    if data is None:
        return promotion.load(layout)
    shown = ref.removeprefix("refs/remotes/").removeprefix("refs/heads/")
    return promotion.parse(data, f"{shown}:{promotion.PROMOTION_FILE}")


def _listed(commits: list[Commit], kinds: bool = False) -> list[str]:
    lines = [f"  {c.sha[:12]} {f'({c.kind}) ' if kinds else ''}{c.subject}" for c in commits[:COMMITS_SHOWN]]
    if len(commits) > COMMITS_SHOWN:
        lines.append(f"  ... and {len(commits) - COMMITS_SHOWN} more")
    return lines


def check(repo: GitRepo, layout: RepoLayout, base: str, head: str) -> GateResult:
    """Whether a pull request of `head` into branch `base` keeps the promotion path."""
    base = base.removeprefix("refs/heads/")
    path = path_for(repo, layout, base)
    stage = path.by_branch(base)
    if stage is None:
        branches = ", ".join(s.branch for s in path.stages)
        return GateResult(True, base, "", (f"{base} is not a stage branch ({branches}): not a promotion",))
    pred = path.predecessor(stage.name)
    try:
        head_sha = repo.resolve(head)
    except InputError as exc:
        raise InputError(f"the head {exc}: fetch it (actions/checkout with fetch-depth: 0)") from None
    if pred is None:
        message = f"{base} is the first stage: reviewed changes land on it by pull request"
        return GateResult(True, base, head_sha, (message,))
    promotion.check_not_shallow(repo)
    pred_ref, base_ref = _stage_ref(repo, pred), _stage_ref(repo, stage)
    shown_pred, shown_base = pred_ref.removeprefix("refs/remotes/"), base_ref.removeprefix("refs/remotes/")
    target = stage.name
    problems: list[str] = []
    foreign = promotion.commits(repo, head_sha, pred_ref)
    if foreign:
        problems.append(
            "\n".join([
                f"{head_sha[:12]} is not on {pred.branch} ({shown_pred}): a change reaches {target} only from "
                f"{pred.name}. {len(foreign)} commit(s) of the head are not on {pred.branch}:",
                *_listed(foreign),
                f"land them on {pred.branch} first, then promote with `inv env.promote {target}`",
            ])
        )  # fmt: skip
    base_tip = repo.resolve(base_ref)
    if not repo.is_ancestor(base_tip, head_sha):
        drift = promotion.commits(repo, base_ref, head_sha, drift=True)
        problems.append(
            "\n".join([
                f"{base} has drift: it has diverged from the head (its tip {base_tip[:12]} is not an ancestor of "
                f"{head_sha[:12]}), and a promotion only fast-forwards. {len(drift)} commit(s) on {shown_base} "
                "are not in the head:",
                *_listed(drift, kinds=True),
                "merge them back up the path with `inv env.backport`, then promote again",
            ])
        )  # fmt: skip
    if problems:
        return GateResult(False, base, head_sha, tuple(problems))
    pending = len(promotion.commits(repo, head_sha, base_ref))
    message = (
        f"promotion into {target}: {head_sha[:12]} is on {pred.branch} and fast-forwards {shown_base} "
        f"from {base_tip[:12]} ({pending} commit(s))"
    )
    return GateResult(True, base, head_sha, (message,))


def ci_event(environ: Mapping[str, str]) -> PullRequest | Push:
    """What GitHub Actions' environment asks the gate: a pull request (`GITHUB_BASE_REF` and the
    head from `GITHUB_HEAD_SHA`, else the event file's `pull_request.head.sha`) or a push of a
    branch (`GITHUB_EVENT_NAME=push`, `GITHUB_REF=refs/heads/...`)."""
    base = environ.get("GITHUB_BASE_REF", "")
    if base:
        head = environ.get("GITHUB_HEAD_SHA", "") or _event_head(environ.get("GITHUB_EVENT_PATH", ""))
        return PullRequest(base, head)
    ref = environ.get("GITHUB_REF", "")
    if environ.get("GITHUB_EVENT_NAME") == "push" and ref.startswith("refs/heads/"):
        return Push(ref.removeprefix("refs/heads/"))
    raise InputError(
        "no pull request or branch push to check: give BASE HEAD (`nox -s promotion -- stage HEAD`), "
        "or run in GitHub Actions on a pull_request (GITHUB_BASE_REF) or push event"
    )


def _event_head(event_path: str) -> str:
    if not event_path:
        raise InputError("GITHUB_BASE_REF is set but neither GITHUB_HEAD_SHA nor GITHUB_EVENT_PATH says the head")
    path = Path(event_path)
    try:
        event = json.loads(files.read_text(path))
    except FileNotFoundError:
        raise InputError(f"GITHUB_EVENT_PATH {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"GITHUB_EVENT_PATH {path}: not JSON: {exc}") from None
    pull_request = event.get("pull_request") if isinstance(event, dict) else None
    head = pull_request.get("head") if isinstance(pull_request, dict) else None
    sha = head.get("sha") if isinstance(head, dict) else None
    if not isinstance(sha, str) or not sha:
        raise InputError(f"GITHUB_EVENT_PATH {path} has no pull_request.head.sha: not a pull request event")
    return sha


def deployed_by_branch(layout: RepoLayout, branch: str) -> list[str]:
    """The environments a push to `branch` deploys ([] when it is no stage branch)."""
    path = promotion.load(layout)
    stage = path.by_branch(branch.removeprefix("refs/heads/"))
    return path.deployed_by(layout, stage) if stage is not None else []
