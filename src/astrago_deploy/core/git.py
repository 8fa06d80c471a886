"""Git for the suite, on GitPython: commits and files read at a ref, refs moved only by
compare-and-swap, pushes that never force, temporary worktrees that carry a marker.

Every git process has a timeout (GitPython kills it after `timeout` seconds) and every failure
is a `GitError` with argv, exit code, stdout and stderr. A ref is created expecting it absent,
moved or deleted expecting its old value (`git update-ref REF NEW OLD`), so a ref another
process moved meanwhile is refused with a `RefMovedError` instead of being overwritten.

A git hook exports GIT_DIR, GIT_INDEX_FILE, GIT_WORK_TREE and more; a task started from one
must still work on its own repository. GitPython reads these from `os.environ` when it opens a
repository and again for every git process it starts, so opening a `GitRepo` removes them from
this process's environment: the suite never means another repository than the one it opens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from astrago_deploy.core import atomic, markers
from astrago_deploy.core.command import CommandResult, Timeouts, timeout_scale
from astrago_deploy.core.errors import GitError, InputError, RefMovedError

# GitPython logs every git process it starts (one already while it is imported) at DEBUG, and
# nox shows DEBUG records of every logger: keep its chatter out of `nox -l` and task output.
logging.getLogger("git").setLevel(logging.WARNING)

import git  # noqa: E402

# Network subcommands get the longer limit; everything else the local one (both scaled by
# ASTRAGO_TIMEOUT_SCALE, like every other command's).
NETWORK_SUBCOMMANDS = frozenset({"push", "fetch", "pull", "clone", "ls-remote", "submodule"})
# What `git rev-parse --local-env-vars` lists as pointing git at a repository, an index or an
# object store (the git config ones aside: those carry settings, not a location), plus the
# namespace and the quarantine a receive hook sets.
REDIRECTING_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_IMPLICIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX",
    "GIT_GRAFT_FILE",
    "GIT_SHALLOW_FILE",
    "GIT_NO_REPLACE_OBJECTS",
    "GIT_REPLACE_REF_BASE",
    "GIT_NAMESPACE",
    "GIT_QUARANTINE_PATH",
)
_OK = frozenset({0})


def forget_caller_repository() -> None:
    """Drop the variables a hook sets that would redirect git, from this process's environment."""
    for name in REDIRECTING_VARIABLES:
        os.environ.pop(name, None)


class _TimedGit(git.cmd.Git):
    """GitPython's runner with a timeout on every git process it starts (its default is none)."""

    timeout = Timeouts.GIT_LOCAL

    def execute(self, command: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("kill_after_timeout") is None and not kwargs.get("as_process"):
            kwargs["kill_after_timeout"] = self.timeout
        return super().execute(command, **kwargs)


class _Repo(git.Repo):
    GitCommandWrapperType = _TimedGit


def _unwrapped(text: str | bytes, label: str) -> str:
    """The output GitPython's error quotes as "\\n  LABEL: '...'", without that wrapping."""
    value = text.decode(errors="replace") if isinstance(text, bytes) else text
    prefix = f"\n  {label}: '"
    if value.startswith(prefix) and value.endswith("'"):
        return value[len(prefix) : -1]
    return value


def _translated(exc: git.GitCommandError) -> GitError:
    status = exc.status if isinstance(exc.status, int) else -1
    argv = [str(a) for a in exc.command]
    return GitError(argv, status, _unwrapped(exc.stdout, "stdout"), _unwrapped(exc.stderr, "stderr"))


def _full_ref(ref: str) -> str:
    # A full name cannot be taken for a commit, a path or an option.
    if not ref.startswith("refs/") or ref.endswith("/") or ".." in ref:
        raise InputError(f"invalid ref {ref!r}: give a full name such as refs/heads/NAME")
    return ref


class GitRepo:
    """One repository (or linked worktree) at `root`."""

    def __init__(self, root: Path, timeout: float | None = None) -> None:
        forget_caller_repository()
        self.root = root
        self.timeout = Timeouts.GIT_LOCAL * timeout_scale() if timeout is None else timeout
        self._repo: git.Repo | None = None

    @classmethod
    def find(cls, root: Path) -> GitRepo | None:
        """The repository `root` is in, or None if it is in none."""
        repo = cls(root)
        try:
            repo.repo  # noqa: B018 - opening is the test
        except InputError:
            return None
        return repo

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            try:
                self._repo = _Repo(self.root, search_parent_directories=True)
            except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
                raise InputError(f"{self.root} is not in a git repository") from exc
            if isinstance(self._repo.git, _TimedGit):
                self._repo.git.timeout = self.timeout
            self._repo.git.update_environment(GIT_TERMINAL_PROMPT="0")
        return self._repo

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    # --- running git ------------------------------------------------------------------------

    def timeout_for(self, *args: str) -> float:
        """The limit for `git ARGS`: the network one for push, fetch and the like, else this repo's."""
        if args and args[0] in NETWORK_SUBCOMMANDS:
            return max(self.timeout, Timeouts.GIT_NETWORK * timeout_scale())
        return self.timeout

    def call(self, *args: str, ok: frozenset[int] = _OK) -> CommandResult:
        """Run `git ARGS` in this repository; a `GitError` on an exit code outside `ok`."""
        runner = self.repo.git
        argv = ["git", *args]
        timeout = self.timeout_for(*args)
        try:
            status, out, err = runner.execute(
                [runner.GIT_PYTHON_GIT_EXECUTABLE, *args],
                with_extended_output=True,
                with_exceptions=False,
                kill_after_timeout=timeout,
                strip_newline_in_stdout=False,
            )
        except git.GitCommandNotFound as exc:
            raise GitError(argv, 127, "", f"executable not found: {exc}") from exc
        if status not in ok:
            raise GitError(argv, status, out, err)
        return CommandResult(argv, status, out, err)

    def run(self, *args: str) -> str:
        return self.call(*args).stdout

    # --- reading ------------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """The commit `ref` names; a clear error if it names none."""
        if ref.startswith("-"):
            raise InputError(f"invalid git ref {ref!r}")
        result = self.call("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", ok=frozenset({0, 1}))
        if result.returncode != 0:
            raise InputError(f"{ref!r} is not a commit in {self.root}")
        return result.stdout.strip()

    def ref_value(self, ref: str) -> str:
        """The object id `ref` (a full name) holds, or "" if it does not exist."""
        result = self.call("rev-parse", "--verify", "--quiet", _full_ref(ref), ok=frozenset({0, 1}))
        return result.stdout.strip() if result.returncode == 0 else ""

    def is_dirty(self) -> bool:
        return bool(self.run("status", "--porcelain", "--untracked-files=normal").strip())

    def current_branch(self) -> str:
        return self.run("rev-parse", "--abbrev-ref", "HEAD").strip()

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        try:
            repo = self.repo
            return bool(repo.is_ancestor(repo.commit(self.resolve(ancestor)), repo.commit(self.resolve(descendant))))
        except git.GitCommandError as exc:
            raise _translated(exc) from exc

    def merge_base(self, one: str, other: str) -> str:
        """The best common ancestor of two commits, or "" if they share no history."""
        try:
            bases = self.repo.merge_base(self.resolve(one), self.resolve(other))
        except git.GitCommandError as exc:
            raise _translated(exc) from exc
        return str(bases[0].hexsha) if bases else ""

    def read_file(self, ref: str, path: str) -> bytes | None:
        """The content of `path` in the tree of commit `ref`, or None if it holds no such file."""
        tree = self.repo.commit(self.resolve(ref)).tree
        try:
            item = tree / path
        except KeyError:
            return None
        if item.type != "blob":
            return None
        data: bytes = item.data_stream.read()
        return data

    def write_tag_object(self, name: str, commit: str, message: str) -> str:
        """An annotated tag object `name` on `commit`, written to the object store with no ref
        pointing at it yet (the caller publishes it: `create_ref` or a push of its id)."""
        ident = self.run("var", "GIT_COMMITTER_IDENT").strip()
        body = f"object {commit}\ntype commit\ntag {name}\ntagger {ident}\n\n{message.rstrip()}\n"
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".tag", delete=False) as handle:
            handle.write(body)
        try:
            return self.run("hash-object", "-t", "tag", "-w", "--", handle.name).strip()
        finally:
            Path(handle.name).unlink(missing_ok=True)

    def checked_out_at(self, branch_ref: str) -> Path | None:
        """The worktree that has `branch_ref` (a full name) checked out, if any."""
        path: Path | None = None
        for line in self.run("worktree", "list", "--porcelain").splitlines():
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree "))
            elif line == f"branch {_full_ref(branch_ref)}":
                return path
        return None

    # --- refs by compare-and-swap ---------------------------------------------------------------

    def create_ref(self, ref: str, new: str, reason: str = "astrago: create") -> None:
        """Create `ref` at `new`, refused if it exists."""
        self._update_ref(ref, new, "", reason)

    def move_ref(self, ref: str, new: str, old: str, reason: str = "astrago: move") -> None:
        """Move `ref` from `old` to `new`, refused if it no longer holds `old`."""
        if not old:
            raise InputError(f"moving {ref} needs its expected old value")
        self._update_ref(ref, new, old, reason)

    def delete_ref(self, ref: str, old: str, reason: str = "astrago: delete") -> None:
        """Delete `ref`, refused if it no longer holds `old`."""
        if not old:
            raise InputError(f"deleting {ref} needs its expected old value")
        self._update_ref(ref, "", old, reason)

    def _update_ref(self, ref: str, new: str, old: str, reason: str) -> None:
        ref = _full_ref(ref)
        args = ["update-ref", "--no-deref", "-m", reason]
        # `update-ref REF NEW OLD` checks and moves under the ref's lock: an empty OLD means "must not
        # exist", so no other process can slip in between the check and the move.
        args += ["-d", ref, old] if not new else [ref, new, old]
        try:
            self.call(*args)
        except GitError as exc:
            found = self.ref_value(ref)
            if found == old:
                raise  # not a race: the update failed for another reason, which the error says
            raise RefMovedError(
                exc.argv, exc.returncode, exc.stdout, exc.stderr, ref, old, found, self.last_mover(ref)
            ) from exc

    def last_mover(self, ref: str) -> str:
        """Who moved `ref` last, when and why, as far as its reflog knows ("" if it keeps none)."""
        result = self.call(
            "log", "-g", "-1", "--date=iso-strict", "--format=%gn <%ge>%x00%gd%x00%gs", _full_ref(ref), "--",
            ok=frozenset({0, 128}),
        )  # fmt: skip
        parts = result.stdout.strip().split("\x00")
        if result.returncode != 0 or len(parts) != 3:
            return ""
        who, selector, message = parts
        when = selector[selector.find("@{") + 2 : -1] if "@{" in selector else ""
        text = f"last moved by {who}" + (f" at {when}" if when else "")
        return f"{text}: {message}" if message else text

    # --- pushing ---------------------------------------------------------------------------------

    def push(self, remote: str, source: str, target: str, lease: str | None = None) -> None:
        """Push commit `source` to `target` (a full ref name) on `remote`, never by force.

        Without `lease` only a fast-forward (or a new ref) is accepted. With `lease`, the remote
        ref must hold exactly that object id ("" = must not exist), as `--force-with-lease=REF:OLD`.
        A refusal is a `RefMovedError`.
        """
        target = _full_ref(target)
        args = ["push", "--porcelain", "--quiet"]
        if lease is not None:
            args.append(f"--force-with-lease={target}:{lease}")
        args += ["--", remote, f"{source}:{target}"]
        result = self.call(*args, ok=frozenset({0, 1}))
        if result.returncode == 0:
            return
        rejected = "[rejected]" in result.stdout or "[rejected]" in result.stderr
        if not rejected:
            raise GitError(result.argv, result.returncode, result.stdout, result.stderr)
        found = self._remote_value(remote, target)
        expected = lease if lease is not None else "an ancestor of the pushed commit"
        raise RefMovedError(
            result.argv, result.returncode, result.stdout, result.stderr, f"{remote} {target}", expected, found
        )

    def push_atomic(self, remote: str, updates: list[tuple[str, str]]) -> None:
        """Push several `(source, full target ref)` updates in one transaction: the remote takes
        all of them or none (`git push --atomic`), never by force, so a branch moves only by
        fast-forward and a tag is only created. A refusal is a `RefMovedError` naming the first
        target the remote refused and what it holds now."""
        targets = [(source, _full_ref(target)) for source, target in updates]
        args = ["push", "--porcelain", "--atomic", "--quiet", "--", remote]
        args += [f"{source}:{target}" for source, target in targets]
        result = self.call(*args, ok=frozenset({0, 1}))
        if result.returncode == 0:
            return
        output = result.stdout + result.stderr
        if "[rejected]" not in output and "atomic push failed" not in output:
            raise GitError(result.argv, result.returncode, result.stdout, result.stderr)
        # Porcelain: "!<TAB>SOURCE:TARGET<TAB>[rejected] (why)"; the others say "atomic push failed".
        refused = targets[0][1]
        for line in result.stdout.splitlines():
            flag, _, rest = line.partition("\t")
            spec, _, why = rest.partition("\t")
            if flag == "!" and "atomic push failed" not in why:
                refused = spec.rpartition(":")[2] or refused
                break
        found = self._remote_value(remote, refused)
        raise RefMovedError(
            result.argv, result.returncode, result.stdout, result.stderr, f"{remote} {refused}",
            "absent or an ancestor of the pushed commit", found,
        )  # fmt: skip

    def remote_value(self, remote: str, ref: str) -> str:
        """The object id `ref` (a full name) holds on `remote` now, or "" when it has none."""
        return self._remote_value(remote, _full_ref(ref))

    def _remote_value(self, remote: str, ref: str) -> str:
        result = self.call("ls-remote", "--", remote, ref, ok=frozenset({0, 2, 128}))
        for line in result.stdout.splitlines():
            oid, _, name = line.partition("\t")
            if name == ref:
                return oid
        return ""

    # --- temporary worktrees ------------------------------------------------------------------

    @contextlib.contextmanager
    def temp_worktree(self, commit: str, parent: Path, purpose: str) -> Iterator[Path]:
        """A detached worktree of `commit` in a marked temporary folder under `parent`, removed
        afterwards. If this process dies meanwhile, `prune_leftovers` removes it on the next run."""
        parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="worktree-", dir=parent))
        markers.mark(folder, purpose)
        path = folder / "tree"
        try:
            self.add_worktree(path, commit)
            yield path
        finally:
            self.remove_worktree(path)
            # Renamed aside before it is deleted: killed part-way, the folder is never left
            # without its marker (and so out of prune_leftovers' reach).
            atomic.remove_dir(folder)

    def add_worktree(self, path: Path, commit: str) -> None:
        """`git worktree add --detach PATH COMMIT`, registered by one rename.

        `git worktree add` writes its administrative folder file by file, with a null HEAD until
        a second git process sets it: killed in between, it leaves a registration that `git
        fsck` reports as an error ("detached HEAD points at nothing"). Here the folder is
        written complete beside the worktree (inside the caller's marked folder, so a leftover
        goes with it) and renamed into `worktrees/`; a registered worktree always has its HEAD,
        and the checkout that follows fills it. Where the rename cannot be done (the folder on
        another file system than the repository), git's own command is used."""
        oid = self.resolve(commit)
        common = Path(self.run("rev-parse", "--path-format=absolute", "--git-common-dir").strip())
        registrations = common / "worktrees"
        registrations.mkdir(exist_ok=True)
        admin = registrations / f"{path.parent.name}-{path.name}"
        staging = path.parent / f".{path.name}.registration"
        staging.mkdir()
        (staging / "HEAD").write_text(oid + "\n", encoding="utf-8")
        (staging / "commondir").write_text("../..\n", encoding="utf-8")
        (staging / "gitdir").write_text(f"{path / '.git'}\n", encoding="utf-8")
        path.mkdir()
        (path / ".git").write_text(f"gitdir: {admin}\n", encoding="utf-8")
        try:
            os.rename(staging, admin)
        except OSError:
            (path / ".git").unlink()
            path.rmdir()
            atomic.remove_dir(staging)
            self.run("worktree", "add", "--quiet", "--detach", str(path), oid)
            return
        worktree = GitRepo(path, self.timeout)
        try:
            worktree.run("reset", "--hard", "--quiet", oid)
        finally:
            worktree.close()

    def worktrees(self) -> list[Path]:
        """The paths of every worktree registered in this repository, the main one first."""
        listing = self.run("worktree", "list", "--porcelain").splitlines()
        return [Path(line.removeprefix("worktree ")) for line in listing if line.startswith("worktree ")]

    def remove_worktree(self, path: Path) -> None:
        """Unregister and delete the worktree at `path` (if it is one), then forget stale entries.

        Forced twice: `git worktree add` keeps a new worktree locked ("initializing") until its
        checkout is done, and a lock survives the process that was killed while adding it."""
        self.call("worktree", "remove", "--force", "--force", str(path), ok=frozenset({0, 128}))
        self.call("worktree", "prune", ok=frozenset({0, 128}))
