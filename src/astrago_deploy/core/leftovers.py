"""Pruning what a crashed run left behind, at the start of `charts.sync` and `charts.upgrade`.

A killed run cannot clean up after itself. What it may leave, in the folders the suite builds
temporary trees in (`temporary_parents`): marked temporary worktrees in `.cache/worktrees/`
(and their registrations in git, possibly still locked "initializing" by a `git worktree add`
that was killed), the marked TMPDIR its tools left files in (`.tools/state/tmp/run-*`), marked
staging folders (`.NAME.XXXX.staging`) next to vendored charts, renders, customer sites and
tool downloads, and the trees that `atomic.remove_dir` was deleting and that `replace_dir`
renamed aside where it cannot swap in one step (`.NAME.del-PID`, `.NAME.old-PID`). A marked
folder is removed only when its owner process is gone; a renamed-aside tree only when the pid in
its name is not alive. A folder without a marker is not ours to judge and stays. Branches are
never touched: the suite creates a branch only when its commit is complete.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from astrago_deploy.core import atomic
from astrago_deploy.core.git import GitRepo
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.markers import pid_alive, read_marker

_ASIDE = re.compile(r"\.(?P<name>.+)\.(?P<kind>old|del)-(?P<pid>\d+)")
_STAGING = re.compile(r"\..+\.staging")
# `atomic.staging_dir`'s names: `.PREFIX.pPID-XXXX.staging`.
_STAGING_PID = re.compile(r"\..+\.p(?P<pid>\d+)-[^/]*\.staging")


def worktrees_dir(layout: RepoLayout) -> Path:
    """Where the suite's temporary git worktrees live, one marked folder each."""
    return layout.cache_dir / "worktrees"


def temporary_parents(layout: RepoLayout) -> list[Path]:
    """Every folder the suite stages trees in (`atomic.staging_dir`, `replace_dir`, `remove_dir`)."""
    parents = [
        worktrees_dir(layout),
        layout.tools_tmp,
        layout.external_dir,
        layout.rendered_dir,
        layout.customers_dir,
        layout.tools_downloads,
    ]
    # The renders an upgrade compares (`after`) and the base renders of `inv diff`.
    parents += sorted((layout.cache_dir / "upgrades").glob("*/after"))
    parents += sorted((layout.cache_dir / "renders").glob("*"))
    return [parent for parent in parents if parent.is_dir() and not parent.is_symlink()]


def _abandoned(folder: Path) -> bool:
    marker = read_marker(folder)
    if marker is None:
        # Killed before its marker was written: the name still says whose it was.
        named = _STAGING_PID.fullmatch(folder.name)
        return named is not None and not pid_alive(int(named["pid"]))
    return not marker.owner_alive()


def _prune_aside(entry: Path, name: str, kind: str) -> None:
    dest = entry.with_name(name)
    if kind == "old" and not dest.exists():
        # Killed between replace_dir's two renames: the old tree is still the current one.
        entry.rename(dest)
    else:
        shutil.rmtree(entry, ignore_errors=True)


def _prune_worktree_registrations(repo: GitRepo, parent: Path) -> list[Path]:
    """Registered worktrees in `parent` whose marked folder is gone (deleted by an older run,
    or killed mid-removal): git would list them for ever, and a locked one is never pruned."""
    done = []
    for path in repo.worktrees()[1:]:
        folder = path.parent
        if folder.parent == parent and not folder.exists():
            repo.remove_worktree(path)
            done.append(path)
    return done


def prune_leftovers(layout: RepoLayout) -> list[Path]:
    """Remove what crashed runs left in this checkout; the paths removed (or restored)."""
    done: list[Path] = []
    repo = GitRepo.find(layout.root)
    worktrees = worktrees_dir(layout)
    try:
        for parent in temporary_parents(layout):
            for entry in sorted(parent.iterdir()):
                if not entry.is_dir() or entry.is_symlink():
                    continue
                aside = _ASIDE.fullmatch(entry.name)
                if aside:
                    if not pid_alive(int(aside["pid"])):
                        _prune_aside(entry, aside["name"], aside["kind"])
                        done.append(entry)
                    continue
                # In the worktree and tool temporary folders every marked folder is one of ours;
                # elsewhere only staging names are (a finished tree renamed from a staging folder
                # may still hold its marker).
                ours = parent in (worktrees, layout.tools_tmp) or _STAGING.fullmatch(entry.name)
                if ours and _abandoned(entry):
                    if parent == worktrees and repo is not None:
                        repo.remove_worktree(entry / "tree")
                    atomic.remove_dir(entry)
                    done.append(entry)
        if repo is not None:
            done += _prune_worktree_registrations(repo, worktrees)
    finally:
        if repo is not None:
            repo.close()
    return done
