"""The promotion gate CI runs on pull requests (`promote/gate.py`, `nox -s promotion`), against
real git: a bare origin with dev, stage and prod, a clone the gate reads, another clone where
people commit and push. Through the real nox as CI runs it: BASE HEAD, and a push event."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from astrago_deploy.core.errors import InputError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.promote import gate
from tests.conftest import PROJECT, git
from tests.test_promotion_backport import Site, make_site


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    for key in [k for k in os.environ if k.startswith("GITHUB_")]:
        monkeypatch.delenv(key)
    return make_site(tmp_path, monkeypatch)


def check(site: Site, base: str, head: str) -> gate.GateResult:
    git(site.root, "fetch", "-q", "origin")
    return gate.check(GitRepo(site.root), site.layout, base, head)


def feature_branch(site: Site, name: str, start: str, subject: str) -> str:
    """A branch `name` on origin, from origin's `start`, with one commit; its id."""
    git(site.box, "fetch", "-q", "origin")
    git(site.box, "push", "-q", "origin", f"refs/remotes/origin/{start}:refs/heads/{name}")
    return site.commit_on(name, {"feature.txt": f"{subject}\n"}, subject)


def test_a_feature_branch_into_stage_is_refused_naming_its_commits_and_env_promote(site: Site) -> None:
    head = feature_branch(site, "feature/x", "stage", "feature: straight to stage")
    result = check(site, "stage", head)
    assert not result.ok and result.head == head
    [message] = result.messages
    assert f"{head[:12]} is not on dev (origin/dev): a change reaches stage only from dev" in message
    assert f"  {head[:12]} feature: straight to stage" in message.splitlines()
    assert message.endswith("land them on dev first, then promote with `inv env.promote stage`")


def test_dev_into_stage_passes_when_the_head_is_on_dev_and_fast_forwards_stage(site: Site) -> None:
    old_stage = site.origin_tip("stage")
    site.commit_on("dev", {"a.txt": "a\n"}, "dev: a")
    head = site.commit_on("dev", {"b.txt": "b\n"}, "dev: b")
    result = check(site, "stage", head)
    assert result.ok, result.messages
    assert result.messages == (
        f"promotion into stage: {head[:12]} is on dev and fast-forwards origin/stage from {old_stage[:12]} (2 commit(s))",
    )
    # An earlier commit of dev is a promotion too; a branch name resolves like a commit id.
    assert check(site, "refs/heads/stage", "origin/dev~1").ok


def test_a_commit_only_on_dev_into_prod_is_refused(site: Site) -> None:
    head = site.commit_on("dev", {"a.txt": "a\n"}, "dev: not yet on stage")
    result = check(site, "prod", head)
    assert not result.ok
    [message] = result.messages
    assert "is not on stage (origin/stage): a change reaches prod only from stage" in message
    assert f"  {head[:12]} dev: not yet on stage" in message.splitlines()
    assert "`inv env.promote prod`" in message
    site.fast_forward("stage", "dev")
    assert check(site, "prod", head).ok


def test_a_target_with_drift_is_refused_as_diverged_naming_backport(site: Site) -> None:
    hotfix = site.commit_on("stage", {"hotfix.txt": "fix\n"}, "stage: a hotfix")
    head = site.commit_on("dev", {"a.txt": "a\n"}, "dev: a")
    result = check(site, "stage", head)
    assert not result.ok
    [message] = result.messages  # the head itself is on dev: only the divergence is wrong
    assert message.startswith(f"stage has drift: it has diverged from the head (its tip {hotfix[:12]} is not an ")
    assert f"  {hotfix[:12]} (hotfix) stage: a hotfix" in message.splitlines()
    assert message.endswith("merge them back up the path with `inv env.backport`, then promote again")


def test_both_problems_are_reported_at_once_and_the_list_is_capped(site: Site) -> None:
    site.commit_on("prod", {"hotfix.txt": "fix\n"}, "prod: a hotfix")
    git(site.box, "fetch", "-q", "origin")
    git(site.box, "push", "-q", "origin", "refs/remotes/origin/stage:refs/heads/feature/many")
    heads = [site.commit_on("feature/many", {"f.txt": f"{n}\n"}, f"feature: step {n}") for n in range(12)]
    result = check(site, "prod", heads[-1])
    assert not result.ok and len(result.messages) == 2
    listed = [line for line in result.messages[0].splitlines() if line.startswith("  ")]
    assert listed == [f"  {h[:12]} feature: step {n}" for n, h in enumerate(heads[:10])] + ["  ... and 2 more"]
    assert "`inv env.backport`" in result.messages[1]


def test_a_pull_request_into_dev_or_a_branch_off_the_path_passes(site: Site) -> None:
    behind = feature_branch(site, "feature/old", "dev", "feature: an old start")
    site.commit_on("dev", {"a.txt": "a\n"}, "dev: moved on")
    assert check(site, "dev", behind).messages == (
        "dev is the first stage: reviewed changes land on it by pull request",
    )
    assert check(site, "dev", behind).ok
    result = check(site, "main", "no-such-commit")
    assert result.ok and result.head == ""
    assert result.messages == ("main is not a stage branch (dev, stage, prod): not a promotion",)


def test_the_rules_come_from_the_target_branch_not_from_the_pull_request(site: Site) -> None:
    # The checkout (the pull request's merge, in CI) says stage deploys from another branch.
    rules = site.layout.root / "environments" / "promotion.yaml"
    rules.write_text("stages: [dev, {name: stage, branch: staging}, prod]\n")
    head = feature_branch(site, "feature/x", "stage", "feature: straight to stage")
    # By the checkout's file stage would be no stage branch, and the pull request would pass.
    result = check(site, "stage", head)
    assert not result.ok and "a change reaches stage only from dev" in result.messages[0]


def test_an_unknown_head_a_shallow_clone_or_a_missing_stage_branch_is_an_error_saying_to_fetch(site: Site) -> None:
    with pytest.raises(InputError, match=r"^the head 'f00d' is not a commit in .*: fetch it \(actions/checkout"):
        check(site, "stage", "f00d")
    shallow = site.root.parent / "shallow"
    git(site.root.parent, "clone", "-q", "--depth", "1", "--no-single-branch", f"file://{site.origin}", str(shallow))
    with pytest.raises(InputError, match=r"^this clone is shallow, .*run `git fetch --unshallow`"):
        gate.check(GitRepo(shallow), site.layout, "stage", "origin/dev")
    git(site.root, "update-ref", "-d", "refs/remotes/origin/dev")
    git(site.root, "branch", "-q", "-D", "dev")
    repo = GitRepo(site.root)
    with pytest.raises(InputError, match=r"^stage branch dev is in neither origin/dev nor dev of this clone: fetch"):
        gate.check(repo, site.layout, "stage", site.origin_tip("stage"))


def test_github_actions_environment_gives_the_pull_request_or_the_pushed_branch(site: Site, tmp_path: Path) -> None:
    head = site.commit_on("dev", {"a.txt": "a\n"}, "dev: a")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"head": {"sha": head}, "base": {"ref": "stage"}}}))
    environ = {"GITHUB_EVENT_NAME": "pull_request", "GITHUB_BASE_REF": "stage", "GITHUB_EVENT_PATH": str(event)}
    request = gate.ci_event(environ)
    assert request == gate.PullRequest("stage", head)
    assert check(site, request.base, request.head).ok
    # GITHUB_HEAD_SHA, where a runner sets it, wins over the event file.
    assert gate.ci_event({**environ, "GITHUB_HEAD_SHA": "abc"}) == gate.PullRequest("stage", "abc")
    assert gate.ci_event({"GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/prod"}) == gate.Push("prod")
    assert gate.deployed_by_branch(site.layout, "prod")[0] == "prod"
    assert gate.deployed_by_branch(site.layout, "stage") == ["stage"]
    assert gate.deployed_by_branch(site.layout, "main") == []
    event.write_text(json.dumps({"push": {}}))
    with pytest.raises(InputError, match=r"has no pull_request\.head\.sha: not a pull request event$"):
        gate.ci_event(environ)
    with pytest.raises(InputError, match=r"^no pull request or branch push to check: give BASE HEAD"):
        gate.ci_event({"GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/tags/v1"})


def test_nox_session_promotion_refuses_a_dev_only_commit_into_prod(site: Site) -> None:
    """The session as CI runs it: the real nox on a checkout's noxfile, BASE HEAD as arguments."""
    head = site.commit_on("dev", {"a.txt": "a\n"}, "dev: not yet on stage")
    git(site.root, "fetch", "-q", "origin")
    shutil.copy2(PROJECT / "noxfile.py", site.root / "noxfile.py")
    done = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(site.root / "noxfile.py"), "-s", "promotion", "--", "prod", head],
        cwd=site.root, env=dict(os.environ), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0, done.stderr
    assert f"{head[:12]} is not on stage (origin/stage): a change reaches prod only from stage" in done.stderr
    assert "`inv env.promote prod`" in done.stderr
    assert "Session promotion aborted: pull request into prod refused: it is not a promotion along the path" in (
        done.stderr
    )


def test_nox_session_promotion_on_a_push_to_stage_renders_and_validates_stage(synced_project: RepoLayout) -> None:
    """A push event from GitHub Actions' environment, on a checkout with vendored charts."""
    root = synced_project.root
    for entry in ("noxfile.py", "tasks.py"):
        shutil.copy2(PROJECT / entry, root / entry)
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "ASTRAGO_"))}
    environ |= {"GITHUB_EVENT_NAME": "push", "GITHUB_REF": "refs/heads/stage"}
    done = subprocess.run(
        [sys.executable, "-m", "nox", "-f", str(root / "noxfile.py"), "-s", "promotion"],
        cwd=root, env=environ, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "render --env stage\n" in done.stderr and "validate --env stage\n" in done.stderr
    assert "validated stage: 0 error(s)" in done.stdout + done.stderr
    assert sorted(p.name for p in synced_project.rendered_dir.iterdir()) == ["stage"]
