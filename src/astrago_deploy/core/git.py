"""Git through the subprocess gateway: refs, status, branches and temporary worktrees."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from astrago_deploy.core.command import Command, Timeouts
from astrago_deploy.core.errors import GitError, InputError

# Subcommands that talk to a remote get the longer limit.
_NETWORK_COMMANDS = frozenset({"push", "fetch", "pull", "clone", "ls-remote", "submodule"})


class GitRepo:
    def __init__(self, root: Path) -> None:
        self.root = root

    def command(self, *args: str, ok: frozenset[int] = frozenset({0})) -> Command:
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        timeout = Timeouts.GIT_NETWORK if args[:1] and args[0] in _NETWORK_COMMANDS else Timeouts.GIT_LOCAL
        return Command(["git", *args], self.root, env, GitError, ok, timeout=timeout)

    def run(self, *args: str) -> str:
        return self.command(*args).run().stdout

    def resolve(self, ref: str) -> str:
        """The commit `ref` names; a clear error if it names none."""
        if ref.startswith("-"):
            raise InputError(f"invalid git ref {ref!r}")
        result = self.command("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", ok=frozenset({0, 1})).run()
        if result.returncode != 0:
            raise InputError(f"{ref!r} is not a commit in {self.root}")
        return result.stdout.strip()

    def is_dirty(self) -> bool:
        return bool(self.run("status", "--porcelain", "--untracked-files=normal").strip())

    def current_branch(self) -> str:
        return self.run("rev-parse", "--abbrev-ref", "HEAD").strip()

    @contextlib.contextmanager
    def worktree(self, commit: str, parent: Path, branch: str | None = None) -> Iterator[Path]:
        """A worktree of `commit` in a temporary folder (on a new `branch`, else detached),
        removed afterwards; the branch, if any, stays."""
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="worktree-", dir=parent))
        path = folder / "tree"
        mode = ["-b", branch] if branch else ["--detach"]
        self.run("worktree", "add", "--quiet", *mode, str(path), commit)
        try:
            yield path
        finally:
            self.command("worktree", "remove", "--force", str(path), ok=frozenset({0, 128})).run()
            shutil.rmtree(folder, ignore_errors=True)
            self.command("worktree", "prune", ok=frozenset({0, 128})).run()
