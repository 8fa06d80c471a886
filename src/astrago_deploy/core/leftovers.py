"""Pruning what a crashed run left behind, at the start of `charts.sync` and `charts.upgrade`.

A killed run cannot clean up after itself. What it may leave: marked temporary worktrees in
`.cache/worktrees/`, marked staging folders in `charts/external/`, the trees `atomic.remove_dir`
was deleting (`.NAME.del-PID`: staging folders and swapped-out trees are deleted that way too),
and a tree that `replace_dir` renamed aside where it cannot swap in one step (`.NAME.old-PID`).
A marked folder is removed only when its owner process is gone; a renamed-aside tree only when
the pid in its name is not alive. A folder without a marker is not ours to judge and stays.
Branches are never touched: the suite creates a branch only when its commit is complete.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.markers import pid_alive, read_marker

_ASIDE = re.compile(r"\.(?P<name>.+)\.(?P<kind>old|del)-(?P<pid>\d+)")


def _abandoned(folder: Path) -> bool:
    marker = read_marker(folder)
    return marker is not None and not marker.owner_alive()


def prune_leftovers(layout: RepoLayout) -> list[Path]:
    """Remove what crashed runs left in this checkout; the paths removed (or restored)."""
    done: list[Path] = []
    repo = GitRepo.find(layout.root)
    worktrees = layout.cache_dir / "worktrees"
    if worktrees.is_dir():
        for folder in sorted(worktrees.iterdir()):
            if folder.is_dir() and _abandoned(folder):
                if repo is not None:
                    repo.remove_worktree(folder / "tree")
                shutil.rmtree(folder, ignore_errors=True)
                done.append(folder)
    if layout.external_dir.is_dir():
        for entry in sorted(layout.external_dir.iterdir()):
            if not entry.is_dir() or entry.is_symlink() or not entry.name.startswith("."):
                continue
            aside = _ASIDE.fullmatch(entry.name)
            if entry.name.endswith(".staging"):
                if _abandoned(entry):
                    shutil.rmtree(entry, ignore_errors=True)
                    done.append(entry)
            elif aside and not pid_alive(int(aside["pid"])):
                dest = entry.with_name(aside["name"])
                if aside["kind"] == "old" and not dest.exists():
                    # Killed between replace_dir's two renames: the old tree is still the current one.
                    entry.rename(dest)
                else:
                    shutil.rmtree(entry, ignore_errors=True)
                done.append(entry)
    if repo is not None:
        repo.close()
    return done
