"""core/leftovers.py: what a run killed at an awkward moment leaves, and the next run's pruning.

Each "killed run" is a real child process that runs the suite's own code and is ended with
SIGKILL at the moment the test is about (held there deterministically: by a git filter that
blocks, or by the process killing itself); git is real and never mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from astrago_deploy.core import atomic
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.leftovers import prune_leftovers
from astrago_deploy.core.markers import read_marker

from .conftest import GIT_ENV, git


@pytest.fixture(autouse=True)
def identity(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """In-process git runs with os.environ: give it the test identity and a private HOME."""
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", str(tmp_path))


def make_repo(root: Path, files: dict[str, str]) -> str:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for name, text in files.items():
        (root / name).write_text(text)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return git(root, "rev-parse", "HEAD").strip()


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def registered(root: Path) -> list[str]:
    listing = git(root, "worktree", "list", "--porcelain").splitlines()
    return [line for line in listing if line.startswith(("worktree ", "locked"))]


# --- a run killed while `git worktree add` checks its tree out -------------------------------------

ADD_WORKTREE = """
import sys
from pathlib import Path
from astrago_deploy.core.git import GitRepo
root = Path(sys.argv[1])
with GitRepo(root).temp_worktree("HEAD", root / ".cache" / "worktrees", "charts.upgrade chart/x-2"):
    pass
"""


@pytest.mark.parametrize("folder", ["kept", "deleted by an older prune"])
def test_a_run_killed_while_git_adds_its_worktree_leaves_nothing_registered_after_the_next_start(
    tmp_path: Path, folder: str
) -> None:
    """The worktree is registered complete (HEAD set) by one rename before its checkout starts,
    so a run killed during the checkout leaves a registration `git fsck` accepts, in a marked
    folder the next start removes. The checkout is held by a smudge filter that blocks."""
    root = tmp_path / "repo"
    reached = tmp_path / "checkout-reached"
    make_repo(root, {"held": "x\n", ".gitattributes": "held filter=hold\n"})
    git(root, "config", "filter.hold.smudge", f"touch {reached} && sleep 600")
    env = {**os.environ, **GIT_ENV}
    run = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ADD_WORKTREE), str(root)], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not reached.exists():
            assert run.poll() is None, "the run ended before git checked the worktree out"
            assert time.monotonic() < deadline, "git never checked the worktree out"
            time.sleep(0.01)
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    git(root, "config", "--unset", "filter.hold.smudge")
    (crashed,) = (root / ".cache" / "worktrees").iterdir()
    assert registered(root)[1:] == [f"worktree {crashed / 'tree'}"]
    git(root, "fsck", "--strict", "--no-progress")  # killed mid-checkout: still no broken HEAD
    if folder != "kept":
        atomic.remove_dir(crashed)

    pruned = prune_leftovers(RepoLayout.at(root))

    assert pruned == [crashed if folder == "kept" else crashed / "tree"]
    assert registered(root) == [f"worktree {root}"]
    assert list((root / ".cache" / "worktrees").iterdir()) == []
    assert list((root / ".git" / "worktrees").glob("*")) == []
    git(root, "fsck", "--strict", "--no-progress")


def test_a_worktree_folder_whose_removal_was_killed_is_pruned_and_a_running_ones_kept(tmp_path: Path) -> None:
    """A temporary folder is renamed aside (`.NAME.del-PID`) before it is deleted, so a run killed
    while deleting it leaves a name that says whose it was."""
    root = tmp_path / "repo"
    make_repo(root, {"n": "1\n"})
    worktrees = root / ".cache" / "worktrees"
    crashed = worktrees / f".worktree-abc.del-{dead_pid()}"
    (crashed / "tree" / "charts").mkdir(parents=True)
    (crashed / "tree" / "charts" / "half-deleted").write_text("x")
    running = worktrees / f".worktree-def.del-{os.getpid()}"
    running.mkdir()

    assert prune_leftovers(RepoLayout.at(root)) == [crashed]

    assert sorted(worktrees.iterdir()) == [running]


# --- staging folders wherever the suite stages -------------------------------------------------------

STAGE_AND_DIE = """
import os, signal, sys
from contextlib import ExitStack
from pathlib import Path
from astrago_deploy.core import atomic
with ExitStack() as stack:
    for parent in sys.argv[1:]:
        staged = stack.enter_context(atomic.staging_dir(Path(parent), "dev"))
        (staged / "half-written.yaml").write_text("kind: ConfigMap\\n")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_staging_folders_of_killed_renders_customer_sites_and_downloads_are_pruned(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_repo(root, {"n": "1\n"})
    layout = RepoLayout.at(root)
    parents = [
        layout.rendered_dir,
        layout.customers_dir,
        layout.tools_downloads,
        layout.cache_dir / "upgrades" / "chart_x-2" / "after",
        layout.cache_dir / "renders" / "0123abcd",
    ]
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(STAGE_AND_DIE), *map(str, parents)])
    assert killed.returncode == -signal.SIGKILL
    staged = sorted(p for parent in parents for p in parent.glob(".dev.*.staging"))
    assert len(staged) == len(parents) and all(read_marker(p) is not None for p in staged)
    # replace_dir killed between its renames in rendered/: the previous render is aside, none in place.
    gone = dead_pid()
    (layout.rendered_dir / f".prod.old-{gone}").mkdir()
    (layout.rendered_dir / f".prod.old-{gone}" / "gpu-operator.yaml").write_text("kind: Namespace\n")
    # A finished render that still holds the marker of the staging folder it was renamed from
    # (the renderer renames the marked folder itself into place): a result, not a leftover.
    finished = layout.rendered_dir / "stage"
    finished.mkdir()
    (finished / "gpu-operator.yaml").write_text("kind: Namespace\n")
    (finished / ".astrago-temp").write_text(f'{{"pid": {gone}, "started": null, "purpose": "staging stage"}}\n')

    pruned = prune_leftovers(layout)

    assert sorted(pruned) == sorted([*staged, layout.rendered_dir / f".prod.old-{gone}"])
    assert sorted(p.name for p in layout.rendered_dir.iterdir()) == ["prod", "stage"]
    assert (layout.rendered_dir / "prod" / "gpu-operator.yaml").read_text() == "kind: Namespace\n"
    assert (finished / "gpu-operator.yaml").is_file()
    for parent in parents[1:]:
        assert list(parent.iterdir()) == []


# --- the tools' temporary files ------------------------------------------------------------------------

TOOLS_TMP = """
import os, signal, sys
from pathlib import Path
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.toolchain.pinned import PinnedTools
tmp = Path(PinnedTools(RepoLayout.at(sys.argv[1])).env()["TMPDIR"])
(tmp / "helmfile123456").mkdir()  # what a killed helmfile leaves
(tmp / "helmfile123456" / "values.yaml").write_text("x: 1\\n")
if sys.argv[2] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_tools_temporary_files_go_with_their_task_or_with_the_next_start_if_it_was_killed(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    make_repo(root, {"n": "1\n"})
    layout = RepoLayout.at(root)
    script = textwrap.dedent(TOOLS_TMP)

    ended = subprocess.run([sys.executable, "-c", script, str(root), "ended"])
    assert ended.returncode == 0
    assert list(layout.tools_tmp.iterdir()) == []

    killed = subprocess.run([sys.executable, "-c", script, str(root), "killed"])
    assert killed.returncode == -signal.SIGKILL
    (crashed,) = layout.tools_tmp.iterdir()
    assert (crashed / "helmfile123456" / "values.yaml").is_file()
    from astrago_deploy.toolchain.pinned import PinnedTools

    running = Path(PinnedTools(layout).env()["TMPDIR"])  # this process: a running task

    assert prune_leftovers(layout) == [crashed]
    assert list(layout.tools_tmp.iterdir()) == [running]


def test_a_staging_folder_killed_before_its_marker_is_pruned_by_the_pid_in_its_name(project: RepoLayout) -> None:
    """A kill between mkdtemp and the marker left an unmarked `.sync.XXXX.staging` that no run
    pruned (seen in the sync kill campaign); the name now says whose it was."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    project.external_dir.mkdir(parents=True, exist_ok=True)
    orphan = project.external_dir / f".sync.p{pid}-abcd1234.staging"
    running = project.external_dir / f".sync.p{os.getpid()}-efgh5678.staging"
    unnamed = project.external_dir / ".sync.ijkl9012.staging"
    for folder in (orphan, running, unnamed):
        folder.mkdir()
    assert orphan in prune_leftovers(project)
    assert not orphan.exists() and running.is_dir() and unnamed.is_dir()
    with atomic.staging_dir(project.external_dir, "sync") as staging:
        assert staging.name.startswith(f".sync.p{os.getpid()}-") and staging.name.endswith(".staging")
