"""`inv env.status` and `inv env.promote` against real git: a bare origin and clones in temporary
folders, the real CLI, the real gates (render, validate, patches.check on vendored charts)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from astrago_deploy.core.errors import RefMovedError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.model import promotion
from astrago_deploy.promote import refs
from tests.conftest import git, loopback
from tests.test_upgrade import TOKEN, FakeGitHub, _GitHubHandler, inv

STAGES = ("dev", "stage", "prod")


@pytest.fixture
def github_api() -> Iterator[FakeGitHub]:
    """The fake GitHub API the upgrade tests use, on loopback."""
    api = FakeGitHub()
    with loopback(type("H", (_GitHubHandler,), {"api": api})) as api.url:
        yield api


def origin_of(root: Path, bare: Path) -> None:
    git(root, "remote", "add", "origin", str(bare))
    for stage in STAGES:
        git(root, "push", "-q", "origin", f"HEAD:refs/heads/{stage}")
    git(root, "fetch", "-q", "origin")


@pytest.fixture
def site(tmp_path: Path, synced_project: RepoLayout) -> RepoLayout:
    """A synced checkout whose origin (a bare repository) has dev, stage and prod at main."""
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    origin_of(synced_project.root, bare)
    return synced_project


def bare_of(layout: RepoLayout) -> Path:
    return Path(git(layout.root, "remote", "get-url", "origin").strip())


def on_origin(layout: RepoLayout, ref: str) -> str:
    out = git(layout.root, "ls-remote", "origin", ref).split()
    return out[0] if out else ""


def origin_tags(layout: RepoLayout, stage: str) -> dict[str, str]:
    """tag name -> the commit it names, on origin."""
    tags: dict[str, str] = {}
    for line in git(layout.root, "ls-remote", "--tags", "origin", f"refs/tags/{stage}/*").splitlines():
        oid, name = line.split("\t")
        if name.endswith("^{}"):
            tags[name.removeprefix("refs/tags/").removesuffix("^{}")] = oid
    return tags


def commit_on(layout: RepoLayout, branch: str, path: str, text: str, subject: str) -> str:
    """A commit on origin's `branch`, made in a worktree of this checkout, pushed (the checkout stays)."""
    root = layout.root
    work = root.parent / f"edit-{branch.replace('/', '-')}"
    git(root, "fetch", "-q", "origin")
    start = f"origin/{branch}" if on_origin(layout, f"refs/heads/{branch}") else "origin/dev"
    git(root, "worktree", "add", "-q", "--detach", str(work), start)
    try:
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as handle:
            handle.write(text)
        git(work, "add", "-A")
        git(work, "commit", "-q", "-m", subject)
        sha = git(work, "rev-parse", "HEAD").strip()
        git(work, "push", "-q", "origin", f"HEAD:refs/heads/{branch}")
    finally:
        git(root, "worktree", "remove", "--force", str(work))
    git(root, "fetch", "-q", "origin")
    return sha


def status_json(layout: RepoLayout) -> dict[str, object]:
    done = inv(layout.root, "env.status", "--json", "--fetch")
    assert done.returncode == 0, done.stderr
    data: dict[str, object] = json.loads(done.stdout)
    return data


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), done.stderr
    return lines[0]


# --- the path, its state ------------------------------------------------------------------------


def test_the_promotion_file_is_validated_with_clear_errors() -> None:
    from astrago_deploy.core.errors import ConfigError

    path = promotion.parse("stages: [dev, {name: stage, branch: release/stage}, {name: prod, pullRequest: true}]\n")
    assert [s.branch for s in path.stages] == ["dev", "release/stage", "prod"]
    assert path.predecessor("prod") == path.stage("stage") and path.predecessor("dev") is None
    bad = {
        "stages: [dev]\n": "at least two stages",
        "stages: [dev, qa]\n": "'qa' is not a stage environment",
        "stages: [dev, dev]\n": "stage name dev appears more than once",
        "stages: [dev, {name: stage, branch: dev}]\n": "stage branch dev appears more than once",
        "stages: [dev, {name: stage, branch: '-x'}]\n": "not a valid branch name",
        "stages: [dev, {name: stage, pullRequest: 'yes'}]\n": "pullRequest must be true or false",
        "stages: [dev, {name: stage, color: red}]\n": "unknown key(s) color",
        "paths: []\n": "one key, 'stages:'",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            promotion.parse(text)


def test_status_reads_origin_and_shows_pending_drift_and_the_chart_matrix(site: RepoLayout) -> None:
    dev = commit_on(site, "dev", "environments/dev/values.yaml", "# a dev change\n", "dev: a change")
    hotfix = commit_on(site, "prod", "environments/prod/values.yaml", "# hotfix\n", "prod: a hotfix")
    data = status_json(site)
    assert data["path"] == list(STAGES)
    envs = data["environments"]
    assert isinstance(envs, dict)
    assert envs["dev"]["commit"] == dev and envs["dev"]["branch"] == "dev"
    assert [c["sha"] for c in envs["stage"]["pending"]] == [dev]
    assert envs["stage"]["drift"] == [] and envs["stage"]["contained"] is True
    assert [(c["sha"], c["kind"]) for c in envs["prod"]["drift"]] == [(hotfix, "hotfix")]
    assert envs["prod"]["contained"] is False and data["containment"] is False
    assert envs["prod"]["charts"]["gpu-operator"] == envs["dev"]["charts"]["gpu-operator"]
    text = inv(site.root, "env.status").stdout
    assert "read from origin" in text and "containment BROKEN" in text
    assert f"{hotfix[:12]} [hotfix] prod: a hotfix" in text
    assert "  gpu-operator" in text  # the matrix, no difference marked


def test_status_without_origin_reads_local_branches_and_refuses_a_shallow_clone(
    synced_project: RepoLayout, tmp_path: Path
) -> None:
    root = synced_project.root
    for stage in STAGES:
        git(root, "branch", stage)
    data = status_json(synced_project)
    assert data["source"] == "local" and data["containment"] is True
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{root}", str(shallow))
    shutil.copytree(root / ".tools", shallow / ".tools", symlinks=True)
    done = inv(shallow, "env.status")
    assert "git fetch --unshallow" in one_line_error(done)


# --- promote ------------------------------------------------------------------------------------


def test_dev_to_stage_to_prod_fast_forwards_origin_and_tags_each_promotion(site: RepoLayout, tmp_path: Path) -> None:
    old_stage = on_origin(site, "refs/heads/stage")
    dev = commit_on(site, "dev", "environments/stage/values.yaml", "# for stage\n", "dev: a change for stage")
    report = tmp_path / "promote.json"
    before = git(site.root, "status", "--porcelain")

    done = inv(site.root, "env.promote", "stage", "--no-pr", "--json", str(report))

    assert done.returncode == 0, done.stderr
    assert on_origin(site, "refs/heads/stage") == dev
    tags = origin_tags(site, "stage")
    assert list(tags.values()) == [dev], tags
    (tag,) = tags
    assert f"tagged {tag}" in done.stdout
    message = git(site.root, "for-each-ref", "--format=%(contents)", f"refs/tags/{tag}")
    assert "dev: a change for stage" in message and "gpu-operator" in message
    assert git(site.root, "cat-file", "-t", tag).strip() == "tag"  # annotated
    assert git(site.root, "merge-base", "--is-ancestor", old_stage, dev) == ""
    for gate in ("charts.verify", "render", "validate", "patches.check"):
        assert f"gate {gate}" in done.stdout
    result = json.loads(report.read_text())
    assert (result["outcome"], result["candidate"], result["tag"]) == ("promoted", dev, tag)
    assert [c["sha"] for c in result["summary"]["commits"]] == [dev]
    assert git(site.root, "status", "--porcelain") == before  # the checkout was not touched

    done = inv(site.root, "env.promote", "prod", "--no-pr")
    assert done.returncode == 0, done.stderr
    assert on_origin(site, "refs/heads/prod") == dev
    assert list(origin_tags(site, "prod").values()) == [dev]
    assert "render prod, sample-site" in done.stdout  # the last stage gates every customer site

    again = inv(site.root, "env.promote", "prod", "--no-pr")
    assert again.returncode == 0 and "nothing to promote" in again.stdout
    assert len(origin_tags(site, "prod")) == 1


def test_a_commit_only_on_dev_or_on_a_feature_branch_is_never_promoted(site: RepoLayout) -> None:
    promoted = commit_on(site, "dev", "environments/dev/values.yaml", "# one\n", "dev: one")
    assert inv(site.root, "env.promote", "stage", "--no-pr").returncode == 0
    only_dev = commit_on(site, "dev", "environments/dev/values.yaml", "# two\n", "dev: two")
    feature = commit_on(site, "feature/x", "environments/dev/values.yaml", "# f\n", "feature: x")
    prod = on_origin(site, "refs/heads/prod")

    skip = inv(site.root, "env.promote", "prod", "--commit", only_dev, "--no-pr")
    assert "it is not on stage" in one_line_error(skip)
    side = inv(site.root, "env.promote", "stage", "--commit", feature, "--no-pr")
    assert "it is not on dev" in one_line_error(side)
    assert on_origin(site, "refs/heads/prod") == prod
    assert on_origin(site, "refs/heads/stage") == promoted

    done = inv(site.root, "env.promote", "prod", "--no-pr")
    assert done.returncode == 0, done.stderr
    assert on_origin(site, "refs/heads/prod") == on_origin(site, "refs/heads/stage") == promoted


def test_an_earlier_commit_of_the_predecessor_can_be_promoted(site: RepoLayout) -> None:
    first = commit_on(site, "dev", "environments/dev/values.yaml", "# one\n", "dev: one")
    commit_on(site, "dev", "environments/dev/values.yaml", "# two\n", "dev: two")
    done = inv(site.root, "env.promote", "stage", "--commit", first[:12], "--no-pr")
    assert done.returncode == 0, done.stderr
    assert on_origin(site, "refs/heads/stage") == first


def test_bad_requests_are_one_line_errors_and_change_nothing(site: RepoLayout) -> None:
    dev = commit_on(site, "dev", "environments/dev/values.yaml", "# one\n", "dev: one")
    git(site.root, "tag", "twice", dev)
    git(site.root, "branch", "twice", "origin/prod")
    assert inv(site.root, "env.promote", "stage", "--no-pr").returncode == 0
    refs_before = git(bare_of(site), "for-each-ref")
    cases = {
        ("env.promote", "dev"): "dev is the first stage",
        ("env.promote", "qa"): "unknown stage 'qa'",
        ("env.promote", "sample-site"): "customer sites deploy from prod",
        ("env.promote", "stage", "--commit", "no-such-ref", "--no-pr"): "does not name a commit",
        ("env.promote", "stage", "--commit", "twice", "--no-pr"): "ambiguous",
        ("env.promote", "prod"): "prod takes changes by pull request",
        ("env.promote", "stage", "--no-pr", "--json", str(site.root)): "is a folder",
    }
    for args, message in cases.items():
        assert message in one_line_error(inv(site.root, *args)), args
    assert git(bare_of(site), "for-each-ref") == refs_before


def test_a_hotfix_on_prod_is_drift_and_blocks_promotion_naming_backport(site: RepoLayout) -> None:
    commit_on(site, "dev", "environments/dev/values.yaml", "# one\n", "dev: one")
    assert inv(site.root, "env.promote", "stage", "--no-pr").returncode == 0
    hotfix = commit_on(site, "prod", "environments/prod/values.yaml", "# hotfix\n", "prod: hotfix")
    envs = status_json(site)["environments"]
    assert isinstance(envs, dict)
    assert [c["sha"] for c in envs["prod"]["drift"]] == [hotfix]
    line = one_line_error(inv(site.root, "env.promote", "prod", "--no-pr"))
    assert "inv env.backport" in line and hotfix[:12] in line
    assert on_origin(site, "refs/heads/prod") == hotfix


def test_a_failing_gate_refuses_with_its_output_and_moves_nothing(site: RepoLayout) -> None:
    stage = on_origin(site, "refs/heads/stage")
    commit_on(site, "dev", "environments/stage/values.yaml", "cluster: [not, a, mapping\n", "dev: broken stage values")
    done = inv(site.root, "env.promote", "stage", "--no-pr")
    assert done.returncode != 0
    assert "a gate failed" in done.stderr and "environments/stage/values.yaml" in done.stderr
    assert on_origin(site, "refs/heads/stage") == stage
    assert origin_tags(site, "stage") == {}
    assert git(site.root, "tag", "--list", "stage/*") == ""


def test_dry_run_runs_the_gates_and_moves_nothing(site: RepoLayout) -> None:
    stage = on_origin(site, "refs/heads/stage")
    commit_on(site, "dev", "environments/dev/values.yaml", "# one\n", "dev: one")
    done = inv(site.root, "env.promote", "stage", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "dry run" in done.stdout and "gate render" in done.stdout
    assert on_origin(site, "refs/heads/stage") == stage and origin_tags(site, "stage") == {}


def test_a_merged_promotion_pull_request_is_tagged_by_the_rerun(site: RepoLayout) -> None:
    dev = commit_on(site, "dev", "environments/dev/values.yaml", "# one\n", "dev: one")
    git(site.root, "push", "-q", "origin", f"{dev}:refs/heads/stage")  # moved by hand: no promotion
    done = inv(site.root, "env.promote", "stage", "--no-pr")
    assert "nothing to promote" in done.stdout and "tagged" not in done.stdout
    assert origin_tags(site, "stage") == {}
    # The promotion's pull request branch at the tip: it was merged (fast-forward).
    git(site.root, "push", "-q", "origin", f"{dev}:refs/heads/promote/stage-{dev[:12]}")
    done = inv(site.root, "env.promote", "stage", "--no-pr")
    assert done.returncode == 0, done.stderr
    assert "nothing to promote" in done.stdout and "tagged its tip" in done.stdout
    assert list(origin_tags(site, "stage").values()) == [dev]


def test_a_local_promotion_killed_before_its_tag_is_finished_by_the_rerun(
    synced_project: RepoLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_upgrade import set_git_identity

    set_git_identity(monkeypatch, synced_project.root.parent)
    root = synced_project.root
    for stage in STAGES:
        git(root, "branch", stage)
    git(root, "commit", "-q", "--allow-empty", "-m", "dev: one")
    dev = git(root, "rev-parse", "HEAD").strip()
    git(root, "update-ref", "refs/heads/dev", dev)
    repo = GitRepo(root)
    stage = promotion.load(synced_project).stage("stage")
    old = git(root, "rev-parse", "stage").strip()
    move = refs.Move(stage, old, dev, refs.tag_name(repo, stage, False), "promote stage")

    def killed(ref: str, new: str, reason: str = "") -> None:
        raise KeyboardInterrupt  # the process dies right after the branch moved

    monkeypatch.setattr(repo, "create_ref", lambda ref, new, reason="": (
        GitRepo.create_ref(repo, ref, new, reason) if not ref.startswith("refs/tags/") else killed(ref, new)))  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        refs.apply(repo, move, remote=False)
    assert git(root, "rev-parse", "stage").strip() == dev and git(root, "tag", "--list", "stage/*") == ""
    done = inv(root, "env.promote", "stage", "--no-pr")
    assert done.returncode == 0, done.stderr
    assert f"tagged its tip {move.tag}" in done.stdout
    assert git(root, "rev-parse", f"{move.tag}^{{commit}}").strip() == dev
    assert git(root, "for-each-ref", "refs/astrago/") == ""


def test_a_concurrent_push_between_check_and_push_is_refused_and_changes_nothing(
    site: RepoLayout, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_upgrade import set_git_identity

    set_git_identity(monkeypatch, site.root.parent)
    dev = commit_on(site, "dev", "environments/dev/values.yaml", "# one\n", "dev: one")
    path = promotion.load(site)
    repo = GitRepo(site.root)
    stage = path.stage("stage")
    old = on_origin(site, "refs/heads/stage")
    # Someone else pushes to stage after our read: our push is no longer a fast-forward.
    other = commit_on(site, "stage", "environments/stage/values.yaml", "# theirs\n", "stage: theirs")
    move = refs.Move(stage, old, dev, refs.tag_name(repo, stage, True), "promote stage")
    with pytest.raises(RefMovedError, match="concurrent push"):
        refs.apply(repo, move, remote=True)
    assert on_origin(site, "refs/heads/stage") == other
    assert origin_tags(site, "stage") == {} and git(site.root, "tag", "--list", "stage/*") == ""


def test_without_origin_the_local_branch_moves_by_compare_and_swap(synced_project: RepoLayout, tmp_path: Path) -> None:
    root = synced_project.root
    for stage in STAGES:
        git(root, "branch", stage)
    git(root, "checkout", "-q", "dev")
    (root / "environments" / "dev" / "values.yaml").open("a").write("# local change\n")
    git(root, "commit", "-qam", "dev: local")
    dev = git(root, "rev-parse", "HEAD").strip()
    # stage checked out (clean) in a worktree follows the branch; with local changes it refuses.
    stage_tree = tmp_path / "stage-tree"
    git(root, "worktree", "add", "-q", str(stage_tree), "stage")
    (stage_tree / "environments" / "stage" / "values.yaml").open("a").write("# edited\n")
    refused = inv(root, "env.promote", "stage", "--no-pr")
    assert "checked out in" in one_line_error(refused) and "local changes" in refused.stderr
    assert git(root, "rev-parse", "stage").strip() != dev
    git(stage_tree, "checkout", "--", "environments/stage/values.yaml")

    done = inv(root, "env.promote", "stage", "--no-pr")
    assert done.returncode == 0, done.stderr
    assert git(root, "rev-parse", "stage").strip() == dev
    assert git(stage_tree, "status", "--porcelain") == ""
    assert git(stage_tree, "rev-parse", "HEAD").strip() == dev
    assert git(root, "tag", "--list", "stage/*").strip().startswith("stage/")


def test_a_stage_that_takes_pull_requests_gets_one_from_a_promote_branch(
    site: RepoLayout, github_api: FakeGitHub, tmp_path: Path
) -> None:
    bare = bare_of(site)
    git(site.root, "remote", "set-url", "origin", "https://github.com/acme/astrago.git")
    git(site.root, "config", "remote.origin.pushurl", str(bare))
    # Fetches read the bare repository too.
    git(site.root, "config", "url." + str(bare) + ".insteadOf", "https://github.com/acme/astrago.git")
    dev = commit_on(site, "dev", "environments/dev/values.yaml", "# one\n", "dev: one")
    assert inv(site.root, "env.promote", "stage", "--no-pr").returncode == 0
    prod = on_origin(site, "refs/heads/prod")

    done = inv(
        site.root, "env.promote", "prod", GITHUB_TOKEN=TOKEN, GITHUB_API_URL=github_api.url,
        GITHUB_SERVER_URL="https://github.com",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    branch = f"promote/prod-{dev[:12]}"
    assert on_origin(site, f"refs/heads/{branch}") == dev
    assert on_origin(site, "refs/heads/prod") == prod  # the pull request moves it, not us
    pulls, labels = github_api.calls
    pull = pulls.json()
    assert (pull["head"], pull["base"]) == (branch, "prod")
    assert len(pull["body"]) < 65_536 and "dev: one" in pull["body"]
    assert "promotion" in labels.json()["labels"]
    for call in github_api.calls:
        assert call.headers["Authorization"] == f"Bearer {TOKEN}"
        assert TOKEN not in call.path and TOKEN.encode() not in call.body
    assert TOKEN not in done.stdout + done.stderr


# --- env.branches -------------------------------------------------------------------------------


def local_branches(layout: RepoLayout) -> dict[str, str]:
    out = git(layout.root, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads/")
    return dict(line.split() for line in out.splitlines())


def test_branches_creates_the_missing_stage_branches_on_origin_and_locally_and_never_moves_one(
    tmp_path: Path, synced_project: RepoLayout
) -> None:
    layout = synced_project
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(layout.root, "remote", "add", "origin", str(bare))
    head = git(layout.root, "rev-parse", "HEAD").strip()

    dry = inv(layout.root, "env.branches", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing was created" in dry.stdout and on_origin(layout, "refs/heads/dev") == ""

    done = inv(layout.root, "env.branches")
    assert done.returncode == 0, done.stderr
    for stage in STAGES:
        assert on_origin(layout, f"refs/heads/{stage}") == head
        assert local_branches(layout)[stage] == head
        assert f"{stage:16} created at {head[:12]} (local and origin)" in done.stdout
        upstream = git(layout.root, "rev-parse", "--abbrev-ref", f"{stage}@{{upstream}}").strip()
        assert upstream == f"origin/{stage}"
    assert promotion.stage_branches_exist(GitRepo(layout.root), promotion.load(layout))

    # A later run creates nothing and moves nothing, even --at another commit.
    later = commit_on(layout, "dev", "environments/dev/values.yaml", "# a dev change\n", "dev: a change")
    again = inv(layout.root, "env.branches", "--at", later)
    assert again.returncode == 0, again.stderr
    assert "every stage branch exists: nothing to create" in again.stdout
    assert [on_origin(layout, f"refs/heads/{s}") for s in STAGES] == [later, head, head]
    assert local_branches(layout)["prod"] == head


def test_branches_copies_a_one_sided_branch_and_refuses_a_commit_that_breaks_containment(
    tmp_path: Path, synced_project: RepoLayout
) -> None:
    layout = synced_project
    root = layout.root
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(root, "remote", "add", "origin", str(bare))
    first = git(root, "rev-parse", "HEAD").strip()
    git(root, "push", "-q", "origin", "HEAD:refs/heads/dev")  # origin has dev only
    (root / "environments/dev/values.yaml").open("a", encoding="utf-8").write("# not on dev\n")
    git(root, "commit", "-q", "-am", "main: not on dev")
    head = git(root, "rev-parse", "HEAD").strip()

    # stage and prod at HEAD would not be contained in dev: refused, nothing created anywhere.
    refused = one_line_error(inv(root, "env.branches"))
    assert f"would break containment: stage ({head[:12]}) must be contained in dev ({first[:12]})" in refused
    assert "nothing was created" in refused
    assert on_origin(layout, "refs/heads/stage") == "" and "dev" not in local_branches(layout)

    # At dev's commit: the local dev copies origin's, stage and prod are created at it.
    done = inv(root, "env.branches", "--at", first)
    assert done.returncode == 0, done.stderr
    assert f"dev              created at {first[:12]} (local)" in done.stdout
    assert f"stage            created at {first[:12]} (local and origin)" in done.stdout
    assert {s: local_branches(layout)[s] for s in STAGES} == dict.fromkeys(STAGES, first)
    assert [on_origin(layout, f"refs/heads/{s}") for s in STAGES] == [first] * 3

    assert "is not a commit" in one_line_error(inv(root, "env.branches", "--at", "no-such-ref"))


def test_branches_without_an_origin_creates_local_branches_only(synced_project: RepoLayout) -> None:
    layout = synced_project
    head = git(layout.root, "rev-parse", "HEAD").strip()
    done = inv(layout.root, "env.branches")
    assert done.returncode == 0, done.stderr
    assert f"prod             created at {head[:12]} (local)" in done.stdout
    assert {s: local_branches(layout)[s] for s in STAGES} == dict.fromkeys(STAGES, head)
    status = inv(layout.root, "env.status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["containment"] is True
