"""core/git.py, core/markers.py and core/leftovers.py against real git repositories.

Every test builds its repositories in a temporary folder with a fixed identity; git is never
mocked. A "crashed run" is a real child process killed with SIGKILL inside the code under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from astrago_deploy.core import atomic
from astrago_deploy.core.errors import GitError, InputError, RefMovedError
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.leftovers import prune_leftovers
from astrago_deploy.core.markers import MARKER_NAME, read_marker

from .conftest import GIT_ENV, PROJECT, git, snapshot


@pytest.fixture(autouse=True)
def identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """In-process git runs with os.environ: give it the test identity and a private HOME."""
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(tmp_path))


def make_repo(root: Path, commits: int = 3) -> list[str]:
    """A repository on `main` with `commits` commits (file `n` holding the commit number)."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    shas = []
    for number in range(commits):
        (root / "n").write_text(f"{number}\n")
        git(root, "add", "n")
        git(root, "commit", "-q", "-m", f"commit {number}")
        shas.append(git(root, "rev-parse", "HEAD").strip())
    return shas


def repo_state(root: Path) -> dict[str, object]:
    """Everything a refused git operation must leave as it was."""
    return {
        "refs": git(root, "for-each-ref", "--format=%(refname) %(objectname)"),
        "head": git(root, "symbolic-ref", "HEAD"),
        "worktrees": git(root, "worktree", "list", "--porcelain"),
        "index": (root / ".git" / "index").read_bytes(),
        "status": git(root, "status", "--porcelain", "--untracked-files=all"),
        "files": snapshot(root),
    }


def other_process_moves(root: Path, ref: str, new: str) -> None:
    env = {**os.environ, **GIT_ENV, "GIT_COMMITTER_NAME": "Other Person", "GIT_COMMITTER_EMAIL": "other@example.invalid"}
    subprocess.run(["git", "update-ref", "-m", "moved by hand", ref, new], cwd=root, env=env, check=True)


# --- compare-and-swap on refs -------------------------------------------------------------------


def test_a_move_is_refused_when_another_process_moved_the_ref_first_and_nothing_changes(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first, second, third = make_repo(root)
    git(root, "branch", "feature", first)
    repo = GitRepo(root)
    expected = repo.ref_value("refs/heads/feature")
    assert expected == first

    other_process_moves(root, "refs/heads/feature", third)
    before = repo_state(root)
    with pytest.raises(RefMovedError) as caught:
        repo.move_ref("refs/heads/feature", second, expected)

    error = caught.value
    assert (error.ref, error.expected, error.found) == ("refs/heads/feature", first, third)
    assert "Other Person <other@example.invalid>" in error.mover
    assert "moved by hand" in error.mover
    assert str(error).startswith(f"refs/heads/feature moved: expected {first[:12]}, found {third[:12]}")
    assert "nothing was changed" in str(error)
    assert repo_state(root) == before


def test_a_move_from_the_expected_value_happens(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first, second, _ = make_repo(root)
    git(root, "branch", "feature", first)
    GitRepo(root).move_ref("refs/heads/feature", second, first, "test: move")
    assert git(root, "rev-parse", "refs/heads/feature").strip() == second
    assert "test: move" in git(root, "reflog", "show", "-1", "refs/heads/feature")


def test_create_expecting_absent_is_refused_when_the_ref_exists(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first, second, _ = make_repo(root)
    repo = GitRepo(root)
    repo.create_ref("refs/heads/chart/x-1.0.0", first)
    assert git(root, "rev-parse", "refs/heads/chart/x-1.0.0").strip() == first
    before = repo_state(root)

    with pytest.raises(RefMovedError) as caught:
        repo.create_ref("refs/heads/chart/x-1.0.0", second)

    assert (caught.value.expected, caught.value.found) == ("", first)
    assert "expected absent" in str(caught.value)
    assert repo_state(root) == before


def test_delete_expecting_a_value_is_refused_when_the_ref_moved(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first, second, _ = make_repo(root)
    git(root, "branch", "feature", first)
    repo = GitRepo(root)
    other_process_moves(root, "refs/heads/feature", second)
    before = repo_state(root)

    with pytest.raises(RefMovedError):
        repo.delete_ref("refs/heads/feature", first)
    assert repo_state(root) == before

    repo.delete_ref("refs/heads/feature", second)
    assert repo.ref_value("refs/heads/feature") == ""


def test_refs_must_be_full_names(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first, *_ = make_repo(root)
    for bad in ("feature", "--delete", "refs/heads/"):
        with pytest.raises(InputError):
            GitRepo(root).create_ref(bad, first)


# --- pushing without force ----------------------------------------------------------------------


def remote_pair(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A repository with an `origin` (bare) holding main, and a second clone of it."""
    root = tmp_path / "repo"
    shas = make_repo(root)
    bare = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(root, "remote", "add", "origin", str(bare))
    git(root, "push", "-q", "origin", "main")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    return root, clone, shas


def test_push_refuses_a_non_fast_forward_without_a_lease(tmp_path: Path) -> None:
    root, clone, shas = remote_pair(tmp_path)
    bare = tmp_path / "origin.git"
    # Someone else moved origin/main on; our main moves elsewhere.
    (clone / "other").write_text("theirs\n")
    git(clone, "add", "other")
    git(clone, "commit", "-q", "-m", "theirs")
    git(clone, "push", "-q", "origin", "main")
    theirs = git(clone, "rev-parse", "HEAD").strip()
    (root / "n").write_text("ours\n")
    git(root, "commit", "-q", "-am", "ours")

    with pytest.raises(RefMovedError) as caught:
        GitRepo(root).push("origin", "HEAD", "refs/heads/main")

    assert caught.value.found == theirs
    assert git(bare, "rev-parse", "refs/heads/main").strip() == theirs
    # A fast-forward is fine.
    GitRepo(clone).push("origin", "HEAD", "refs/heads/feature")
    assert git(bare, "rev-parse", "refs/heads/feature").strip() == theirs
    assert shas


def test_a_lease_push_is_refused_when_the_remote_moved_and_accepted_when_it_did_not(tmp_path: Path) -> None:
    root, clone, shas = remote_pair(tmp_path)
    bare = tmp_path / "origin.git"
    GitRepo(root).push("origin", shas[0], "refs/heads/env/dev", lease="")  # created expecting absent
    seen = shas[0]
    # Another process moves env/dev meanwhile.
    git(clone, "fetch", "-q", "origin")
    git(clone, "push", "-q", "origin", f"{shas[1]}:refs/heads/env/dev")

    with pytest.raises(RefMovedError) as caught:
        GitRepo(root).push("origin", shas[2], "refs/heads/env/dev", lease=seen)
    assert (caught.value.expected, caught.value.found) == (seen, shas[1])
    assert git(bare, "rev-parse", "refs/heads/env/dev").strip() == shas[1]

    with pytest.raises(RefMovedError):  # expecting absent, but it exists
        GitRepo(root).push("origin", shas[2], "refs/heads/env/dev", lease="")

    # With the value the remote really holds, the lease allows even a rewind (never a bare --force).
    GitRepo(root).push("origin", shas[0], "refs/heads/env/dev", lease=shas[1])
    assert git(bare, "rev-parse", "refs/heads/env/dev").strip() == shas[0]


# --- reading --------------------------------------------------------------------------------------


def test_reading_commits_files_and_history(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first, second, third = make_repo(root)
    git(root, "switch", "-q", "-c", "side", first)
    (root / "side").write_text("side\n")
    git(root, "add", "side")
    git(root, "commit", "-q", "-m", "side")
    repo = GitRepo(root)

    assert repo.read_file(second, "n") == b"1\n"
    assert repo.read_file("main", "n") == b"2\n"
    assert repo.read_file("main", "side") is None
    assert repo.read_file("side", "side") == b"side\n"
    assert repo.is_ancestor(first, "main")
    assert not repo.is_ancestor("side", "main")
    assert repo.merge_base("side", "main") == first
    assert repo.current_branch() == "side"
    with pytest.raises(InputError):
        repo.resolve("no-such-ref")
    assert third


def test_failures_and_timeouts_are_git_errors_with_argv_and_output(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_repo(root, 1)
    with pytest.raises(GitError) as caught:
        GitRepo(root).run("cat-file", "-p", "nonexistent")
    assert caught.value.argv == ["git", "cat-file", "-p", "nonexistent"]
    assert caught.value.returncode == 128
    assert "nonexistent" in caught.value.stderr

    with pytest.raises(GitError) as slow:
        GitRepo(root, timeout=0.5).run("-c", "alias.nap=!sleep 30", "nap")
    assert "did not complete in 0.5 secs" in slow.value.stderr


# --- temporary worktrees and leftovers ------------------------------------------------------------


def test_a_temporary_worktree_is_detached_marked_and_removed(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first, *_ = make_repo(root)
    refs = git(root, "for-each-ref")
    parent = root / ".cache" / "worktrees"
    with pytest.raises(RuntimeError), GitRepo(root).temp_worktree(first, parent, "a test") as tree:
        marker = read_marker(tree.parent)
        assert marker is not None
        assert (marker.pid, marker.purpose) == (os.getpid(), "a test")
        assert marker.owner_alive()
        assert git(tree, "rev-parse", "HEAD").strip() == first
        assert git(tree, "rev-parse", "--abbrev-ref", "HEAD").strip() == "HEAD"  # detached
        raise RuntimeError("interrupted")
    assert list(parent.iterdir()) == []
    assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(root, "for-each-ref") == refs


CRASH = """
import os, signal, sys
from pathlib import Path
from astrago_deploy.core import atomic
from astrago_deploy.core.git import GitRepo
root = Path(sys.argv[1])
with GitRepo(root).temp_worktree("HEAD", root / ".cache" / "worktrees", "crash test"):
    with atomic.staging_dir(root / "charts" / "external", "sync") as staging:
        (staging / "half-written").write_text("x")
        os.kill(os.getpid(), signal.SIGKILL)
"""


def crash_inside_a_worktree_and_a_staging_folder(root: Path) -> None:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(CRASH), str(root)], env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_prune_leftovers_removes_a_crashed_runs_folders_and_keeps_everything_else(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    first, *_ = make_repo(root)
    layout = RepoLayout.at(root)
    external = layout.external_dir
    external.mkdir(parents=True)
    # A user's branch, merged long ago, named like ours.
    git(root, "branch", "chart/csi-driver-nfs-4.13.4", first)
    crash_inside_a_worktree_and_a_staging_folder(root)
    (crashed_tree,) = (layout.cache_dir / "worktrees").iterdir()
    (crashed_staging,) = external.glob(".sync.*.staging")
    assert read_marker(crashed_tree) is not None
    assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 2
    # replace_dir killed between its two renames (the old tree aside, no new one yet), and
    # remove_dir killed before deleting what it renamed aside.
    gone = dead_pid()
    (external / f".csi-driver-nfs-v4.9.0.old-{gone}").mkdir()
    (external / f".csi-driver-nfs-v4.9.0.old-{gone}" / "Chart.yaml").write_text("name: csi-driver-nfs\n")
    (external / f".harbor-1.14.2.del-{gone}").mkdir()
    (external / "harbor-1.14.2").mkdir()
    # Folders that are not a crashed run's: a running one's (this process), and unmarked ones.
    (external / f".gpu-operator-v25.3.4.old-{os.getpid()}").mkdir()
    (layout.cache_dir / "worktrees" / "someone-elses").mkdir()
    (external / ".hand-made.staging").mkdir()

    with (
        GitRepo(root).temp_worktree(first, layout.cache_dir / "worktrees", "running") as running,
        atomic.staging_dir(external, "running") as running_staging,
    ):
        removed = prune_leftovers(layout)

        assert sorted(removed) == sorted([
            crashed_tree, crashed_staging, external / f".csi-driver-nfs-v4.9.0.old-{gone}",
            external / f".harbor-1.14.2.del-{gone}",
        ])  # fmt: skip
        assert running.is_dir() and running_staging.is_dir()
        assert (layout.cache_dir / "worktrees" / "someone-elses").is_dir()
        assert (external / ".hand-made.staging").is_dir()
        assert (external / f".gpu-operator-v25.3.4.old-{os.getpid()}").is_dir()
        assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 2  # ours and the running one

    assert not crashed_tree.exists() and not crashed_staging.exists()
    # The old tree is put back where replace_dir had taken it from.
    assert (external / "csi-driver-nfs-v4.9.0" / "Chart.yaml").read_text() == "name: csi-driver-nfs\n"
    assert (external / "harbor-1.14.2").is_dir()
    assert git(root, "branch", "--list", "--format=%(refname:short)").split() == ["chart/csi-driver-nfs-4.13.4", "main"]
    assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1
    git(root, "fsck", "--no-progress")


def test_a_marker_of_a_reused_pid_is_not_its_owners(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / MARKER_NAME).write_text(f'{{"pid": {os.getpid()}, "started": 1, "purpose": "p"}}\n')
    marker = read_marker(folder)
    assert marker is not None
    assert not marker.owner_alive()
    (folder / MARKER_NAME).write_text("not json")
    assert read_marker(folder) is None


# --- a hook's environment -----------------------------------------------------------------------


def test_git_variables_of_a_hook_do_not_redirect_the_suites_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "repo"
    *_, head = make_repo(root)
    other = tmp_path / "other"
    other_head = make_repo(other, 1)[0]
    other_before = repo_state(other)
    # What git exports to a pre-commit hook run in `other`.
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    monkeypatch.setenv("GIT_OBJECT_DIRECTORY", str(other / ".git" / "objects"))
    monkeypatch.setenv("GIT_PREFIX", "")

    repo = GitRepo(root)
    assert repo.resolve("HEAD") == head != other_head
    repo.create_ref("refs/heads/made-here", head)
    with repo.temp_worktree(head, root / ".cache" / "worktrees", "hook test") as tree:
        assert (tree / "n").read_text() == "2\n"
        GitRepo(tree).run("commit", "-q", "--allow-empty", "-m", "in the worktree")

    monkeypatch.delenv("GIT_DIR", raising=False)
    assert git(root, "rev-parse", "refs/heads/made-here").strip() == head
    assert repo_state(other) == other_before


def test_charts_sync_from_a_hook_prunes_a_crashed_runs_leftovers_in_its_own_checkout(
    synced_project: RepoLayout, tmp_path: Path
) -> None:
    """`inv charts.sync` starts with prune_leftovers, on its own checkout even when a hook's
    GIT_DIR points at another repository."""
    root = synced_project.root
    external = synced_project.external_dir
    crash_inside_a_worktree_and_a_staging_folder(root)
    (crashed_tree,) = (synced_project.cache_dir / "worktrees").iterdir()
    # replace_dir was killed after renaming the vendored tree aside: sync puts it back, nothing is fetched.
    gone = dead_pid()
    chart = external / "csi-driver-nfs-v4.9.0"
    files = snapshot(chart)
    chart.rename(external / f".csi-driver-nfs-v4.9.0.old-{gone}")
    other = tmp_path / "other"
    make_repo(other, 1)
    other_before = repo_state(other)
    env = {k: v for k, v in os.environ.items() if k not in ("CHARTS_MIRROR", "ASTRAGO_ROOT")}
    env.update(GIT_ENV)
    env.update({
        "ASTRAGO_ROOT": str(root), "NO_COLOR": "1", "GIT_DIR": str(other / ".git"), "GIT_WORK_TREE": str(other),
        "GIT_INDEX_FILE": str(other / ".git" / "index"),
    })  # fmt: skip
    inv = [str(PROJECT / ".venv" / "bin" / "inv"), "-r", str(PROJECT)]

    done = subprocess.run([*inv, "charts.sync"], cwd=root, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stderr
    assert "vendored" not in done.stdout
    assert snapshot(chart) == files
    assert not crashed_tree.exists()
    assert list(external.glob(".*")) == []
    assert git(root, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert repo_state(other) == other_before
