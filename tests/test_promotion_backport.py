"""`inv env.backport` and `inv env.rollback` on real git: a bare origin, the clone the tasks run
in, and a second clone ("the box") where engineers commit hotfixes and push concurrently.

Every scenario starts with dev, stage and prod at one commit of a copy of the monorepo (its
real `environments/promotion.yaml`). What is checked is what origin holds afterwards: which
commits each branch contains, its tree, that every old tip is an ancestor of the new one (no
force), and, on a refusal, that no ref moved anywhere and no worktree was left behind.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from astrago_deploy.core.errors import InputError, RefMovedError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import promotion
from astrago_deploy.model.promotion import BACKPORT_TRAILER, ROLLBACK_TRAILER
from astrago_deploy.promote import backport as back_merge
from astrago_deploy.promote import refs
from astrago_deploy.promote import rollback as roll

from .conftest import GIT_ENV, PROJECT, git, loopback, make_project

STAGES = ("dev", "stage", "prod")
OLD_PROD_TAG = "prod/2024.01.01-1"
NEW_PROD_TAG = "prod/2024.01.02-1"
# The `inv` the tests run: the real namespace, with this branch's two tasks added to `env` until
# tasks/env.py wires them (then the additions are no-ops).
CLI_MODULE = """
from pathlib import Path

from astrago_deploy.tasks import build_namespace, env_backport

ns = build_namespace(Path({root!r}))
env = ns.collections["env"]
for name, body in (("backport", env_backport.backport), ("rollback", env_backport.rollback)):
    if name not in env.tasks:
        env.add_task(body, name=name)
"""


@dataclass
class Site:
    layout: RepoLayout  # the clone the tasks run in
    origin: Path  # bare
    box: Path  # another clone, where people commit and push

    @property
    def root(self) -> Path:
        return self.layout.root

    def origin_tip(self, branch: str) -> str:
        return git(self.origin, "rev-parse", f"refs/heads/{branch}").strip()

    def origin_tips(self) -> dict[str, str]:
        return {b: self.origin_tip(b) for b in STAGES}

    def commit_on(self, branch: str, files: dict[str, str | None], message: str) -> str:
        """Commit `files` (None: delete) on origin's `branch` from the box and push it."""
        git(self.box, "fetch", "-q", "origin")
        git(self.box, "checkout", "-q", "-B", branch, f"origin/{branch}")
        for rel, text in files.items():
            path = self.box / rel
            if text is None:
                git(self.box, "rm", "-q", rel)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                git(self.box, "add", rel)
        git(self.box, "commit", "-q", "-m", message)
        git(self.box, "push", "-q", "origin", f"{branch}:refs/heads/{branch}")
        return git(self.box, "rev-parse", "HEAD").strip()

    def fast_forward(self, target: str, source: str) -> None:
        """A promotion as env.promote makes it: origin's target fast-forwarded to source's tip."""
        git(self.box, "fetch", "-q", "origin")
        git(self.box, "push", "-q", "origin", f"refs/remotes/origin/{source}:refs/heads/{target}")

    def tag_on_origin(self, name: str, commit: str) -> None:
        git(self.box, "tag", "-a", "-m", f"promotion {name}", name, commit)
        git(self.box, "push", "-q", "origin", f"refs/tags/{name}")


def tree(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", f"{ref}^{{tree}}").strip()


def ancestor(repo: Path, old: str, new: str) -> bool:
    return subprocess.run(["git", "merge-base", "--is-ancestor", old, new], cwd=repo).returncode == 0


def files_at(repo: Path, ref: str) -> set[str]:
    return set(git(repo, "ls-tree", "-r", "--name-only", ref).split())


def trailer(repo: Path, commit: str, key: str) -> str:
    return git(repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", commit).strip()


def registered_worktrees(repo: Path) -> list[str]:
    listing = git(repo, "worktree", "list", "--porcelain").splitlines()
    return [line for line in listing if line.startswith("worktree ")]


def assert_fsck_clean(repo: Path) -> None:
    result = subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not re.search(r"^(error|missing|broken)", result.stdout + result.stderr, re.M)


def holds(site: Site) -> bool:
    repo = GitRepo(site.root)
    promotion.fetch(repo, promotion.load(site.layout))
    return promotion.read_state(repo, promotion.load(site.layout), remote=True).holds


def identity(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    """The library runs git with os.environ: a fixed identity, no token, no outside config."""
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(home))
    for key in ("GITHUB_TOKEN", "GITHUB_API_URL", "GITHUB_SERVER_URL", "ASTRAGO_ROOT"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    return make_site(tmp_path, monkeypatch)


def make_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    """A checkout with one commit on main, dev, stage and prod; a bare origin holding the four
    branches (the checkout's remote) and a second clone of it to commit and push from."""
    identity(monkeypatch, tmp_path)
    layout = make_project(tmp_path / "work")
    (layout.root / "notes.txt").write_text("one\n")
    git(layout.root, "add", "notes.txt")
    git(layout.root, "commit", "-q", "-m", "notes")
    for branch in STAGES:
        git(layout.root, "branch", branch)
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(layout.root), str(origin))
    git(layout.root, "remote", "add", "origin", str(origin))
    git(layout.root, "fetch", "-q", "origin")
    box = tmp_path / "box"
    git(tmp_path, "clone", "-q", str(origin), str(box))
    return Site(layout, origin, box)


def promoted_twice(site: Site) -> tuple[str, str]:
    """prod tagged at the start (OLD_PROD_TAG), then a dev change promoted to stage and prod
    (NEW_PROD_TAG): (the first prod commit, the second)."""
    first = site.origin_tip("prod")
    site.tag_on_origin(OLD_PROD_TAG, first)
    second = site.commit_on("dev", {"feature.txt": "feature\n"}, "dev: a feature")
    site.fast_forward("stage", "dev")
    site.fast_forward("prod", "stage")
    site.tag_on_origin(NEW_PROD_TAG, second)
    return first, second


# --- env.backport ------------------------------------------------------------------------------


def test_a_prod_hotfix_is_merged_into_stage_then_dev_and_containment_holds_again(site: Site) -> None:
    dev_only = site.commit_on("dev", {"dev-only.txt": "dev\n"}, "dev: not promoted yet")
    hotfix = site.commit_on("prod", {"hotfix.txt": "fix\n"}, "prod: hotfix")
    before = site.origin_tips()
    head, status = git(site.root, "rev-parse", "HEAD"), git(site.root, "status", "--porcelain")
    assert not holds(site)

    result = back_merge.backport(site.layout, pull_requests=False)

    after = site.origin_tips()
    assert [(m.source.name, m.target.name) for m in result.merges] == [("prod", "stage"), ("stage", "dev")]
    assert after["prod"] == hotfix  # prod itself is never touched
    for branch in ("stage", "dev"):
        assert ancestor(site.origin, hotfix, after[branch]), f"{branch} lacks the hotfix"
        assert ancestor(site.origin, before[branch], after[branch]), f"{branch} was not moved forward"
        first_parent = git(site.origin, "rev-parse", f"{after[branch]}^1").strip()
        assert first_parent == before[branch]
        assert "hotfix.txt" in files_at(site.origin, after[branch])
    assert trailer(site.origin, after["stage"], BACKPORT_TRAILER) == hotfix
    assert trailer(site.origin, after["dev"], BACKPORT_TRAILER) == after["stage"]
    subject = git(site.origin, "log", "-1", "--format=%s%n%b", after["stage"])
    assert "backport prod into stage" in subject and hotfix[:12] in subject
    assert {"dev-only.txt", "hotfix.txt"} <= files_at(site.origin, after["dev"])
    assert "dev-only.txt" not in files_at(site.origin, after["stage"])
    assert ancestor(site.origin, dev_only, after["dev"])
    assert holds(site)
    # The user's checkout and its branches are untouched; no temporary worktree is left.
    assert git(site.root, "rev-parse", "HEAD") == head and git(site.root, "status", "--porcelain") == status
    assert len(registered_worktrees(site.root)) == 1
    assert not list((site.layout.cache_dir / "worktrees").glob("*"))
    assert back_merge.backport(site.layout, pull_requests=False).nothing_to_do


def test_backport_after_a_prod_rollback_keeps_stage_and_dev_trees(site: Site) -> None:
    first, _second = promoted_twice(site)
    rolled = roll.rollback(site.layout, "prod", pull_requests=False)  # default: the previous tag
    assert rolled.target == first and rolled.label == OLD_PROD_TAG
    assert tree(site.origin, "refs/heads/prod") == tree(site.origin, first)
    trees = {b: tree(site.origin, f"refs/heads/{b}") for b in ("dev", "stage")}

    result = back_merge.backport(site.layout, pull_requests=False)

    after = site.origin_tips()
    for branch in ("dev", "stage"):
        assert tree(site.origin, after[branch]) == trees[branch], f"the rollback rolled {branch} back"
        assert "feature.txt" in files_at(site.origin, after[branch])
        assert ancestor(site.origin, rolled.commit, after[branch])
    assert [step.strategy for step in result.merges[0].steps] == [back_merge.OURS]
    assert holds(site)


def test_hotfix_rollback_hotfix_merge_in_three_steps_only_the_rollback_as_history(site: Site) -> None:
    start = site.origin_tip("prod")
    hotfix_1 = site.commit_on("prod", {"hotfix-1.txt": "one\n"}, "prod: hotfix 1")
    rolled = roll.rollback(site.layout, "prod", to=start, pull_requests=False)
    assert rolled.label == start[:12]
    hotfix_2 = site.commit_on("prod", {"hotfix-2.txt": "two\n"}, "prod: hotfix 2")
    assert "hotfix-1.txt" not in files_at(site.origin, "refs/heads/prod")

    result = back_merge.backport(site.layout, pull_requests=False)

    stage_merge = result.merges[0]
    assert [(s.merged.sha, s.strategy) for s in stage_merge.steps] == [
        (hotfix_1, back_merge.MERGE), (rolled.commit, back_merge.OURS), (hotfix_2, back_merge.MERGE),
    ]  # fmt: skip
    after = site.origin_tips()
    for branch in ("dev", "stage"):
        # Hotfix 1 stays here (only prod was rolled back); hotfix 2 arrives.
        assert {"hotfix-1.txt", "hotfix-2.txt"} <= files_at(site.origin, after[branch])
    assert holds(site)


def test_a_conflicting_back_merge_names_the_file_and_changes_nothing(site: Site) -> None:
    site.commit_on("dev", {"notes.txt": "dev's words\n"}, "dev: notes")
    site.commit_on("prod", {"notes.txt": "prod's words\n"}, "prod: hotfix to notes")
    before = site.origin_tips()
    local_before = git(site.root, "for-each-ref", "--format=%(refname) %(objectname)")

    with pytest.raises(back_merge.BackportConflict) as caught:
        back_merge.backport(site.layout, pull_requests=False)

    assert caught.value.files == ["notes.txt"]
    message = str(caught.value)
    assert "notes.txt" in message and "stage into dev" in message and "nothing was changed" in message
    assert "\n" not in message
    # prod -> stage merged cleanly, but stage did not move either: everything or nothing.
    assert site.origin_tips() == before
    # Only the remote-tracking refs the fetch brought changed locally, and no ref of ours.
    local_after = git(site.root, "for-each-ref", "--format=%(refname) %(objectname)")
    changed = set(local_after.splitlines()) ^ set(local_before.splitlines())
    assert all(line.split()[0].startswith("refs/remotes/origin/") for line in changed)
    assert len(registered_worktrees(site.root)) == 1
    assert not list((site.layout.cache_dir / "worktrees").glob("*"))
    assert_fsck_clean(site.root)
    assert_fsck_clean(site.origin)


def test_a_push_to_origin_between_read_and_move_is_refused_with_one_line(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.commit_on("prod", {"hotfix.txt": "fix\n"}, "prod: hotfix")
    before = site.origin_tips()
    real_apply = refs.apply
    sneaked: list[str] = []

    def apply_after_a_concurrent_push(repo: GitRepo, move: refs.Move, remote: bool) -> None:
        if not sneaked:  # someone pushes to stage after backport read and checked it
            sneaked.append(site.commit_on("stage", {"meanwhile.txt": "x\n"}, "stage: pushed meanwhile"))
        real_apply(repo, move, remote)

    monkeypatch.setattr(refs, "apply", apply_after_a_concurrent_push)
    with pytest.raises(RefMovedError) as caught:
        back_merge.backport(site.layout, pull_requests=False)

    assert "\n" not in str(caught.value) and "nothing was changed" in str(caught.value)
    assert site.origin_tips() == {**before, "stage": sneaked[0]}  # only the other push landed


def test_a_branch_moved_after_the_merges_were_made_stops_before_any_move(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.commit_on("prod", {"hotfix.txt": "fix\n"}, "prod: hotfix")
    real_plan = back_merge.plan
    moved: list[str] = []

    def plan_then_a_push_to_dev(*args: object) -> list[back_merge.BackMerge]:
        merges = real_plan(*args)  # type: ignore[arg-type]
        moved.append(site.commit_on("dev", {"meanwhile.txt": "x\n"}, "dev: pushed meanwhile"))
        return merges

    before = site.origin_tips()
    monkeypatch.setattr(back_merge, "plan", plan_then_a_push_to_dev)
    with pytest.raises(InputError, match=r"origin's dev moved since it was read .*nothing was changed"):
        back_merge.backport(site.layout, pull_requests=False)
    assert site.origin_tips() == {**before, "dev": moved[0]}  # stage was not moved first


def test_a_run_killed_between_its_two_moves_is_finished_by_the_next(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    hotfix = site.commit_on("prod", {"hotfix.txt": "fix\n"}, "prod: hotfix")
    real_apply = refs.apply
    applied: list[str] = []

    def killed_before_the_second(repo: GitRepo, move: refs.Move, remote: bool) -> None:
        if applied:
            raise KeyboardInterrupt  # the process dies after stage moved, before dev does
        real_apply(repo, move, remote)
        applied.append(move.stage.name)

    monkeypatch.setattr(refs, "apply", killed_before_the_second)
    with pytest.raises(KeyboardInterrupt):
        back_merge.backport(site.layout, pull_requests=False)
    assert applied == ["stage"] and not ancestor(site.origin, hotfix, "refs/heads/dev")
    monkeypatch.setattr(refs, "apply", real_apply)

    rerun = back_merge.backport(site.layout, pull_requests=False)

    assert [(m.source.name, m.target.name) for m in rerun.merges] == [("stage", "dev")]
    assert ancestor(site.origin, hotfix, "refs/heads/dev") and holds(site)
    assert len(registered_worktrees(site.root)) == 1


def test_dry_run_merges_but_moves_nothing(site: Site) -> None:
    site.commit_on("prod", {"hotfix.txt": "fix\n"}, "prod: hotfix")
    before = site.origin_tips()
    result = back_merge.backport(site.layout, pull_requests=False, dry_run=True)
    assert [m.target.name for m in result.merges] == ["stage", "dev"]
    assert site.origin_tips() == before


def test_without_origin_the_local_branches_move_by_compare_and_swap(site: Site) -> None:
    git(site.root, "remote", "remove", "origin")
    git(site.root, "checkout", "-q", "prod")
    (site.root / "hotfix.txt").write_text("fix\n")
    git(site.root, "add", "hotfix.txt")
    git(site.root, "commit", "-q", "-m", "prod: local hotfix")
    hotfix = git(site.root, "rev-parse", "HEAD").strip()
    git(site.root, "checkout", "-q", "main")

    back_merge.backport(site.layout, pull_requests=False)

    for branch in ("stage", "dev"):
        assert ancestor(site.root, hotfix, f"refs/heads/{branch}")
    state = promotion.read_state(GitRepo(site.root), promotion.load(site.layout))
    assert not state.remote and state.holds


# --- env.rollback ------------------------------------------------------------------------------


def test_rollback_to_a_tag_restores_its_tree_with_one_tagged_commit_on_top(site: Site) -> None:
    first, second = promoted_twice(site)

    result = roll.rollback(site.layout, "prod", to=OLD_PROD_TAG, pull_requests=False)

    new = site.origin_tip("prod")
    assert new == result.commit
    assert tree(site.origin, new) == tree(site.origin, OLD_PROD_TAG)
    assert git(site.origin, "rev-parse", f"{new}^@").split() == [second]  # one parent: the old tip
    assert trailer(site.origin, new, ROLLBACK_TRAILER) == first
    assert git(site.origin, "log", "-1", "--format=%s", new).strip() == f"rollback prod to {OLD_PROD_TAG}"
    assert re.fullmatch(r"prod/\d{4}\.\d{2}\.\d{2}-1", result.tag)
    assert git(site.origin, "rev-parse", f"refs/tags/{result.tag}^{{commit}}").strip() == new
    state = promotion.read_state(GitRepo(site.root), promotion.load(site.layout), remote=True)
    assert [(c.sha, c.kind, c.rollback_to) for c in state.stages["prod"].drift] == [(new, "rollback", first)]
    # Rolled back to the same tree again: nothing to do, nothing moved.
    again = roll.rollback(site.layout, "prod", to=OLD_PROD_TAG, pull_requests=False)
    assert again.nothing_to_do and site.origin_tip("prod") == new


def test_rollback_to_a_commit_that_was_never_on_prod_is_refused(site: Site) -> None:
    promoted_twice(site)
    dev_only = site.commit_on("dev", {"dev-only.txt": "dev\n"}, "dev: only here")
    before = site.origin_tips()
    with pytest.raises(InputError, match=rf"{dev_only[:12]}\) was never on prod.*nothing was changed"):
        roll.rollback(site.layout, "prod", to=dev_only, pull_requests=False)
    assert site.origin_tips() == before
    assert not promotion.tags_at(GitRepo(site.root), "prod", dev_only)


def test_rollback_of_a_customer_site_names_the_stage_it_deploys_from(site: Site) -> None:
    (site.layout.customers_dir / "acme").mkdir(parents=True)
    with pytest.raises(InputError, match=r"acme is a customer site, which deploys from prod.*inv env.rollback prod"):
        roll.rollback(site.layout, "acme", pull_requests=False)
    with pytest.raises(InputError, match="unknown environment 'nowhere'"):
        roll.rollback(site.layout, "nowhere", pull_requests=False)


def test_rollback_refs_that_do_not_resolve_or_are_ambiguous_are_one_line_errors(site: Site) -> None:
    first, second = promoted_twice(site)
    git(site.root, "fetch", "-q", "origin", "refs/tags/*:refs/tags/*")
    git(site.root, "branch", "twin", first)
    git(site.root, "tag", "twin", second)
    before = site.origin_tips()
    for ref, why in (("no-such-ref", "does not name a commit"), ("twin", "is ambiguous"), ("--all", "invalid ref")):
        with pytest.raises(InputError, match=why) as caught:
            roll.rollback(site.layout, "prod", to=ref, pull_requests=False)
        assert "\n" not in str(caught.value)
    assert site.origin_tips() == before


def test_rollback_with_no_earlier_tag_asks_for_to(site: Site) -> None:
    with pytest.raises(InputError, match="no promotion tag before its tip: name what to roll back to with --to"):
        roll.rollback(site.layout, "prod", pull_requests=False)


def test_rollback_refused_when_origin_moves_between_read_and_push(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    promoted_twice(site)
    real_tag_name = refs.tag_name
    sneaked: list[str] = []

    def tag_name_while_someone_pushes(repo: GitRepo, stage: promotion.Stage, remote: bool) -> str:
        sneaked.append(site.commit_on("prod", {"meanwhile.txt": "x\n"}, "prod: pushed meanwhile"))
        return real_tag_name(repo, stage, remote)

    monkeypatch.setattr(refs, "tag_name", tag_name_while_someone_pushes)
    with pytest.raises(RefMovedError) as caught:
        roll.rollback(site.layout, "prod", to=OLD_PROD_TAG, pull_requests=False)
    assert "\n" not in str(caught.value) and "nothing was changed" in str(caught.value)
    assert site.origin_tip("prod") == sneaked[0]
    remote_tags = git(site.origin, "tag", "--list", "prod/*").split()
    assert sorted(remote_tags) == [OLD_PROD_TAG, NEW_PROD_TAG]  # no tag for the refused rollback


# --- pull requests instead of moves, against a fake GitHub API on loopback ------------------------

TOKEN = "ghp_backport_test"
# origin is `ssh://github.com/acme/astrago`; this "ssh" runs the git command it is given on the
# bare repository instead, so fetch, ls-remote and push are real git transfers.
FAKE_SSH = """#!/bin/sh
for last; do :; done
exec sh -c "$(printf '%s' "$last" | sed "s#'/acme/astrago'#'$FAKE_SSH_BARE'#")"
"""


@dataclass
class FakeGitHub:
    url: str = ""
    calls: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    api = FakeGitHub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            api.calls.append((self.command, self.path, dict(self.headers), body))
            pulls = {
                "/repos/acme/astrago/pulls": (201, {"number": 9, "html_url": "https://github.com/acme/astrago/pull/9"})
            }
            labels = {"/repos/acme/astrago/issues/9/labels": (200, [])}
            status, payload = {**pulls, **labels}.get(self.path, (404, {"message": "Not Found"}))
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with loopback(Handler) as api.url:
        yield api


def on_github(site: Site, monkeypatch: pytest.MonkeyPatch, api: FakeGitHub) -> dict[str, str]:
    script = site.root.parent / "fake-ssh"
    script.write_text(FAKE_SSH)
    script.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    monkeypatch.setenv("GIT_SSH_VARIANT", "simple")
    monkeypatch.setenv("FAKE_SSH_BARE", str(site.origin))
    git(site.root, "remote", "set-url", "origin", "ssh://github.com/acme/astrago")
    return {"GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": api.url, "GITHUB_SERVER_URL": "https://github.com"}


def test_backport_opens_a_pull_request_into_a_stage_that_wants_one(
    site: Site, monkeypatch: pytest.MonkeyPatch, fake_github: FakeGitHub
) -> None:
    environ = on_github(site, monkeypatch, fake_github)
    hotfix = site.commit_on("prod", {"hotfix.txt": "fix\n"}, "prod: hotfix")
    before = site.origin_tips()

    result = back_merge.backport(site.layout, environ=environ)

    stage_merge, dev_merge = result.merges
    after = site.origin_tips()
    # stage takes no pull request (promotion.yaml): moved; dev wants one: left where it was.
    assert after["stage"] == stage_merge.new and ancestor(site.origin, hotfix, after["stage"])
    assert after["dev"] == before["dev"]
    assert dev_merge.head_branch == f"backport/dev-{dev_merge.new[:12]}"
    assert site.origin_tip(dev_merge.head_branch) == dev_merge.new
    assert dev_merge.pull_request == "https://github.com/acme/astrago/pull/9"
    assert [(method, path) for method, path, _, _ in fake_github.calls] == [
        ("POST", "/repos/acme/astrago/pulls"), ("POST", "/repos/acme/astrago/issues/9/labels"),
    ]  # fmt: skip
    (_, _, headers, pull), (_, _, _, labels) = fake_github.calls
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in pull.decode() and TOKEN not in labels.decode()
    request = json.loads(pull)
    assert (request["base"], request["head"]) == ("dev", dev_merge.head_branch)
    assert hotfix[:12] in request["body"]
    assert json.loads(labels) == {"labels": ["backport"]}


def test_rollback_opens_a_pull_request_into_prod_and_tags_nothing_yet(
    site: Site, monkeypatch: pytest.MonkeyPatch, fake_github: FakeGitHub
) -> None:
    environ = on_github(site, monkeypatch, fake_github)
    first, second = promoted_twice(site)

    result = roll.rollback(site.layout, "prod", to=OLD_PROD_TAG, environ=environ)

    assert site.origin_tip("prod") == second and not result.tag
    assert result.head_branch == f"rollback/prod-{result.commit[:12]}"
    assert site.origin_tip(result.head_branch) == result.commit
    assert tree(site.origin, result.commit) == tree(site.origin, first)
    request = json.loads(fake_github.calls[0][3])
    assert (request["base"], request["head"], request["title"]) == (
        "prod", result.head_branch, f"rollback prod to {OLD_PROD_TAG}",
    )  # fmt: skip
    assert json.loads(fake_github.calls[1][3]) == {"labels": ["rollback"]}
    # --no-pr moves prod itself.
    moved = roll.rollback(site.layout, "prod", to=OLD_PROD_TAG, environ=environ, pull_requests=False)
    assert site.origin_tip("prod") == moved.commit and moved.tag


# --- the tasks through the real `inv` ------------------------------------------------------------


def inv(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    module_dir = site.root.parent / "cli"
    module_dir.mkdir(exist_ok=True)
    (module_dir / "backport_tasks.py").write_text(CLI_MODULE.format(root=str(site.root)))
    argv = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(module_dir), "-c", "backport_tasks", *args]
    env = {key: value for key, value in os.environ.items() if not key.startswith("GITHUB_")}
    env.update({**GIT_ENV, "ASTRAGO_ROOT": str(site.root), "NO_COLOR": "1", "HOME": str(site.root.parent)})
    return subprocess.run(argv, cwd=site.root, env=env, capture_output=True, text=True, timeout=600)


def test_cli_backport_then_rollback_acceptance(site: Site) -> None:
    hotfix = site.commit_on("prod", {"hotfix.txt": "fix\n"}, "prod: hotfix")
    proc = inv(site, "env.backport", "--no-pr")
    assert proc.returncode == 0, proc.stderr
    assert "prod -> stage: 1 commit(s)" in proc.stdout and "moved origin/dev" in proc.stdout
    assert ancestor(site.origin, hotfix, "refs/heads/dev")
    again = inv(site, "env.backport", "--no-pr")
    assert again.returncode == 0 and back_merge.NOTHING_TO_DO in again.stdout

    site.tag_on_origin(OLD_PROD_TAG, site.origin_tip("prod"))
    later = site.commit_on("prod", {"hotfix-2.txt": "two\n"}, "prod: hotfix 2")
    proc = inv(site, "env.rollback", "prod", "--to", OLD_PROD_TAG, "--no-pr")
    assert proc.returncode == 0, proc.stderr
    assert f"rolled origin/prod back to the tree of {OLD_PROD_TAG}" in proc.stdout
    assert tree(site.origin, "refs/heads/prod") == tree(site.origin, OLD_PROD_TAG)
    assert ancestor(site.origin, later, "refs/heads/prod")


def test_cli_conflict_and_customer_site_are_one_line_errors(site: Site) -> None:
    site.commit_on("dev", {"notes.txt": "dev's words\n"}, "dev: notes")
    site.commit_on("prod", {"notes.txt": "prod's words\n"}, "prod: hotfix to notes")
    before = site.origin_tips()
    proc = inv(site, "env.backport", "--no-pr")
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: back-merging stage into dev conflicts in notes.txt")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert site.origin_tips() == before
    (site.layout.customers_dir / "acme").mkdir(parents=True)
    proc = inv(site, "env.rollback", "acme")
    assert proc.returncode == 1 and "deploys from prod" in proc.stderr
