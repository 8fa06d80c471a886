"""The promotion path (`environments/promotion.yaml`) and its state, read from git alone.

The path is an ordered list of stages, each with a deployment branch. The invariant is
containment: each stage's branch is contained in its predecessor's (prod ⊆ stage ⊆ dev), kept
by fast-forward-only promotion. A commit on a later branch that its predecessor lacks (a hotfix
made there, a rollback) is drift, which `inv env.backport` merges back up the path.

Everything here is merge-base ancestry over refs, so CI can check the same rules with nothing
but a clone: where an `origin` remote exists the stage branches are read as `origin/<branch>`
(what is deployed is what origin holds), else as local branches.

A completed promotion is an annotated tag `<stage>/<YYYY.MM.DD>-<n>` on the promoted commit.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any

from astrago_deploy.core import yaml
from astrago_deploy.core.errors import ConfigError, GitError, InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import environments

PROMOTION_FILE = "environments/promotion.yaml"
ROLLBACK_TRAILER = "Rollback-To"
BACKPORT_TRAILER = "Backport-Of"
_STAGE_KEYS = frozenset({"name", "branch", "pullRequest"})
# A branch name a person would write: git's rules (check-ref-format) plus no leading dash.
_BRANCH = re.compile(r"(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)(?!.*\.lock(?:/|$))[A-Za-z0-9._/-]+(?<![./])")
_TAG_TAIL = re.compile(r"(?P<date>\d{4}\.\d{2}\.\d{2})-(?P<n>[1-9]\d{0,5})")
_FIELD = "\x1f"
_RECORD = "\x1e"


@dataclass(frozen=True)
class Stage:
    name: str
    branch: str
    pull_request: bool

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"


@dataclass(frozen=True)
class PromotionPath:
    stages: tuple[Stage, ...]
    source: str = PROMOTION_FILE

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def first(self) -> Stage:
        return self.stages[0]

    @property
    def last(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise InputError(f"{name!r} is not a stage of the promotion path; stages: {', '.join(self.names)}")

    def index(self, name: str) -> int:
        return self.stages.index(self.stage(name))

    def predecessor(self, name: str) -> Stage | None:
        position = self.index(name)
        return self.stages[position - 1] if position else None

    def successor(self, name: str) -> Stage | None:
        position = self.index(name)
        return self.stages[position + 1] if position + 1 < len(self.stages) else None

    def by_branch(self, branch: str) -> Stage | None:
        return next((s for s in self.stages if s.branch == branch), None)

    def deploys_from(self, layout: RepoLayout, env_name: str) -> Stage:
        """The stage whose branch environment `env_name` deploys from (customer sites: the last)."""
        env = environments.get(layout, env_name)
        if env.customer:
            return self.last
        return self.stage(env.name)

    def deployed_by(self, layout: RepoLayout, stage: Stage) -> list[str]:
        """The environments `stage`'s branch deploys: its own, and every customer site when it is the last."""
        names = [stage.name]
        if stage == self.last:
            names += [e.name for e in environments.discover(layout) if e.customer]
        return names


def parse(text: str | bytes, source: str = PROMOTION_FILE, known: frozenset[str] | None = None) -> PromotionPath:
    """The path a promotion file declares; a `ConfigError` naming the file and what is wrong."""
    data = yaml.load(text, source)
    if not isinstance(data, dict) or set(data) != {"stages"} or not isinstance(data["stages"], list):
        raise ConfigError(f"{source}: expected a mapping with one key, 'stages:', holding a list of stages")
    allowed = known if known is not None else frozenset(environments.STAGES)
    stages: list[Stage] = []
    for position, written in enumerate(data["stages"], 1):
        where = f"{source}: stages[{position}]"
        entry = {"name": written} if isinstance(written, str) else written
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a stage name or a mapping with name, branch, pullRequest")
        unknown = sorted(str(k) for k in entry if k not in _STAGE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: name, branch, pullRequest")
        name = entry.get("name")
        if not isinstance(name, str) or name not in allowed:
            raise ConfigError(f"{where}: name {name!r} is not a stage environment; one of {', '.join(sorted(allowed))}")
        branch = entry.get("branch", name)
        if not isinstance(branch, str) or not _BRANCH.fullmatch(branch):
            raise ConfigError(f"{where}: branch {branch!r} is not a valid branch name")
        pull_request = entry.get("pullRequest", False)
        if not isinstance(pull_request, bool):
            raise ConfigError(f"{where}: pullRequest must be true or false, not {pull_request!r}")
        stages.append(Stage(name, branch, pull_request))
    if len(stages) < 2:
        raise ConfigError(f"{source}: a promotion path needs at least two stages")
    for attribute in ("name", "branch"):
        values = [getattr(s, attribute) for s in stages]
        doubled = sorted({v for v in values if values.count(v) > 1})
        if doubled:
            raise ConfigError(f"{source}: stage {attribute} {', '.join(doubled)} appears more than once")
    return PromotionPath(tuple(stages), source)


def load(layout: RepoLayout) -> PromotionPath:
    """The path this checkout declares."""
    path = layout.root / PROMOTION_FILE
    try:
        text = yaml.read_text(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: it declares the promotion path (see README)") from None
    return parse(text, str(path))


# --- refs ------------------------------------------------------------------------------------


def has_origin(repo: GitRepo) -> bool:
    return "origin" in repo.run("remote").split()


def branch_ref(repo: GitRepo, stage: Stage, remote: bool) -> str:
    return f"refs/remotes/origin/{stage.branch}" if remote else stage.ref


def check_not_shallow(repo: GitRepo) -> None:
    if repo.run("rev-parse", "--is-shallow-repository").strip() == "true":
        raise InputError(
            "this clone is shallow, so ancestry between stage branches cannot be decided: "
            "run `git fetch --unshallow` (or clone without --depth) and try again"
        )


def fetch(repo: GitRepo, path: PromotionPath) -> None:
    """Bring origin's stage branches and tags into `refs/remotes/origin/*` and `refs/tags/*`."""
    specs = [f"+refs/heads/{s.branch}:refs/remotes/origin/{s.branch}" for s in path.stages]
    # A branch origin lacks is not an error: fetch them one by one when the whole set fails.
    try:
        repo.run("fetch", "--quiet", "--no-tags", "origin", *specs)
    except GitError:
        for spec in specs:
            repo.call("fetch", "--quiet", "--no-tags", "origin", spec, ok=frozenset({0, 1, 128}))
    repo.run("fetch", "--quiet", "--no-tags", "origin", "refs/tags/*:refs/tags/*")


def refresh(repo: GitRepo, path: PromotionPath, fetch_origin: bool = True) -> bool:
    """Make the stage refs current before deciding anything: refuse a shallow clone, fetch
    origin's stage branches and tags when origin exists (and `fetch_origin`). Whether the stage
    branches are then read from origin."""
    check_not_shallow(repo)
    remote = has_origin(repo)
    if remote and fetch_origin:
        fetch(repo, path)
    return remote


@dataclass(frozen=True)
class Commit:
    sha: str
    date: str  # committer date, ISO 8601
    subject: str
    kind: str = "commit"  # commit | hotfix | rollback | backport | merge
    rollback_to: str = ""

    def as_json(self) -> dict[str, str]:
        out = {"sha": self.sha, "date": self.date, "subject": self.subject, "kind": self.kind}
        if self.rollback_to:
            out["rollback_to"] = self.rollback_to
        return out


def _trailer(body: str, key: str) -> str:
    for line in reversed(body.splitlines()):
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == key.lower():
            return value.strip()
    return ""


def commits(repo: GitRepo, include: str, exclude: str | None = None, drift: bool = False) -> list[Commit]:
    """Commits reachable from `include` and not from `exclude`, oldest first. With `drift`, each
    is classified: a rollback (it carries a Rollback-To trailer), a back-merge env.backport
    made (Backport-Of), otherwise a hotfix."""
    args = ["log", "--reverse", "--topo-order", f"--format=%H{_FIELD}%cI{_FIELD}%s{_FIELD}%P{_FIELD}%B{_RECORD}"]
    args += [include] + ([f"^{exclude}"] if exclude else []) + ["--"]
    out: list[Commit] = []
    for raw in repo.run(*args).split(_RECORD):
        record = raw.strip("\n")
        if not record:
            continue
        sha, date, subject, parents, body = [*record.split(_FIELD), "", "", "", ""][:5]
        rollback_to = _trailer(body, ROLLBACK_TRAILER)
        kind = "commit"
        if drift:
            if rollback_to:
                kind = "rollback"
            elif _trailer(body, BACKPORT_TRAILER):
                kind = "backport"
            elif len(parents.split()) > 1:
                kind = "merge"
            else:
                kind = "hotfix"
        out.append(Commit(sha, date, subject, kind, rollback_to))
    return out


def tip(repo: GitRepo, ref: str) -> Commit:
    sha, date, subject = repo.run("log", "-1", f"--format=%H{_FIELD}%cI{_FIELD}%s", ref, "--").strip().split(_FIELD)
    return Commit(sha, date, subject)


def chart_versions(repo: GitRepo, commit: str) -> dict[str, str]:
    """name -> version from the lock at `commit` (empty when it has none)."""
    data = repo.read_file(commit, "charts/versions.lock")
    if data is None:
        return {}
    parsed = yaml.load(data, f"{commit[:12]}:charts/versions.lock")
    charts = parsed.get("charts") if isinstance(parsed, dict) else None
    if not isinstance(charts, dict):
        return {}
    return {str(k): str(v.get("version", "")) for k, v in charts.items() if isinstance(v, dict)}


# --- promotion tags ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PromotionTag:
    name: str
    commit: str
    date: str  # YYYY.MM.DD
    number: int

    @property
    def ref(self) -> str:
        return f"refs/tags/{self.name}"


def promotion_tags(repo: GitRepo, stage: str) -> list[PromotionTag]:
    """Every `<stage>/<YYYY.MM.DD>-<n>` tag, oldest first (by date, then number)."""
    listing = repo.run("for-each-ref", f"--format=%(refname:strip=2){_FIELD}%(*objectname){_FIELD}%(objectname)",
                       f"refs/tags/{stage}/")  # fmt: skip
    tags = []
    for line in listing.splitlines():
        name, peeled, oid = line.split(_FIELD)
        match = _TAG_TAIL.fullmatch(name.removeprefix(f"{stage}/"))
        if match:
            tags.append(PromotionTag(name, peeled or oid, match["date"], int(match["n"])))
    return sorted(tags, key=lambda t: (t.date, t.number))


def next_tag_name(repo: GitRepo, stage: str, today: dt.date | None = None, taken: set[str] | None = None) -> str:
    day = (today or dt.datetime.now(dt.UTC).date()).strftime("%Y.%m.%d")
    used = {t.number for t in promotion_tags(repo, stage) if t.date == day}
    used |= {int(m["n"]) for name in taken or set() if (m := _TAG_TAIL.fullmatch(name.removeprefix(f"{stage}/")))
             and m["date"] == day}  # fmt: skip
    return f"{stage}/{day}-{max(used, default=0) + 1}"


def tags_at(repo: GitRepo, stage: str, commit: str) -> list[PromotionTag]:
    return [t for t in promotion_tags(repo, stage) if t.commit == commit]


# --- the state of the path ---------------------------------------------------------------------


@dataclass
class StageState:
    stage: Stage
    ref: str  # the ref read: refs/remotes/origin/B or refs/heads/B
    exists: bool
    tip: Commit | None = None
    charts: dict[str, str] = field(default_factory=dict)
    pending: list[Commit] = field(default_factory=list)  # on the predecessor, not here
    drift: list[Commit] = field(default_factory=list)  # here, not on the predecessor
    last_promotion: PromotionTag | None = None
    contained: bool = True  # in the predecessor's branch (the first stage: always)

    def as_json(self) -> dict[str, Any]:
        return {
            "branch": self.stage.branch,
            "ref": self.ref,
            "exists": self.exists,
            "commit": self.tip.sha if self.tip else None,
            "date": self.tip.date if self.tip else None,
            "subject": self.tip.subject if self.tip else None,
            "charts": self.charts,
            "pending": [c.as_json() for c in self.pending],
            "drift": [c.as_json() for c in self.drift],
            "last_promotion": (
                {"tag": self.last_promotion.name, "commit": self.last_promotion.commit} if self.last_promotion else None
            ),
            "contained": self.contained,
            "pull_request": self.stage.pull_request,
        }


@dataclass
class PathState:
    path: PromotionPath
    remote: bool  # read from origin/*
    stages: dict[str, StageState]

    @property
    def holds(self) -> bool:
        return all(s.contained for s in self.stages.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path.names,
            "source": "origin" if self.remote else "local",
            "containment": self.holds,
            "environments": {name: state.as_json() for name, state in self.stages.items()},
        }

    def chart_matrix(self) -> dict[str, dict[str, str]]:
        """chart -> stage -> version ("" where that stage's lock lacks it)."""
        names = sorted({c for s in self.stages.values() for c in s.charts})
        return {c: {n: s.charts.get(c, "") for n, s in self.stages.items()} for c in names}


def read_state(repo: GitRepo, path: PromotionPath, remote: bool | None = None) -> PathState:
    """Each stage's tip, lock, pending and drift commits, last promotion and containment."""
    check_not_shallow(repo)
    remote = has_origin(repo) if remote is None else remote
    states: dict[str, StageState] = {}
    previous: StageState | None = None
    for stage in path.stages:
        ref = branch_ref(repo, stage, remote)
        state = StageState(stage, ref, bool(repo.ref_value(ref)))
        if state.exists:
            state.tip = tip(repo, ref)
            state.charts = chart_versions(repo, state.tip.sha)
            tags = promotion_tags(repo, stage.name)
            state.last_promotion = tags[-1] if tags else None
            if previous is not None and previous.exists:
                state.pending = commits(repo, previous.ref, ref)
                state.drift = commits(repo, ref, previous.ref, drift=True)
                state.contained = not state.drift
            elif previous is not None:
                state.contained = False
        states[stage.name] = state
        previous = state
    return PathState(path, remote, states)


def stage_for_branch(path: PromotionPath, branch: str) -> Stage | None:
    return path.by_branch(branch.removeprefix("refs/heads/"))


def deployable(repo: GitRepo, stage: Stage, commit: str, remote: bool | None = None) -> str:
    """Why `commit` may be deployed from `stage` ("" when it may not): it is the stage branch's
    tip, origin's where there is one (a local branch can hold commits origin never took), or it
    carries one of the stage's promotion tags (created locally only after origin took them)."""
    ref = branch_ref(repo, stage, has_origin(repo) if remote is None else remote)
    if repo.ref_value(ref) == commit:
        return f"the tip of {ref.removeprefix('refs/remotes/').removeprefix('refs/heads/')}"
    tags = tags_at(repo, stage.name, commit)
    if tags:
        return f"promotion tag {tags[-1].name}"
    return ""


def stage_branches_exist(repo: GitRepo, path: PromotionPath, remote: bool | None = None) -> bool:
    """Whether every stage branch exists where it is read: on origin where there is one, else locally."""
    remote = has_origin(repo) if remote is None else remote
    return all(repo.ref_value(branch_ref(repo, s, remote)) for s in path.stages)
