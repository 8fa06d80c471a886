"""Atomic file and directory writes.

Content is built next to its destination (same filesystem), flushed, then renamed into
place, so a crash leaves either the old state or the new one, never a mix. A directory tree
is swapped into place in one step (`replace_dir`), so its readers never find it missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from astrago_deploy.core.markers import mark


def write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically (temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            tmp.chmod(mode)
        elif path.exists():
            tmp.chmod(path.stat().st_mode & 0o7777)
        else:
            tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, mode: int | None = None) -> None:
    """`write_bytes` of `text` as UTF-8, line endings as given (no newline translation)."""
    write_bytes(path, text.encode("utf-8"), mode)


@contextlib.contextmanager
def staging_dir(parent: Path, prefix: str) -> Iterator[Path]:
    """A temporary directory inside `parent` (same filesystem), removed on exit; it carries a
    marker so that, if this process dies first, the next run's `prune_leftovers` removes it."""
    parent.mkdir(parents=True, exist_ok=True)
    # The name carries this process's id: killed between mkdtemp and the marker, the folder is
    # still known to be ours and abandoned (prune_leftovers).
    tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}.p{os.getpid()}-", suffix=".staging", dir=parent))
    try:
        mark(tmp, f"staging {prefix}")
        yield tmp
    finally:
        # Renamed aside first: a kill while deleting (the marker may already be gone) leaves a
        # `.NAME.del-PID` folder, which the next run's prune_leftovers removes.
        try:
            remove_dir(tmp)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def staged_tree(parent: Path, name: str) -> Iterator[Path]:
    """An empty folder `name` inside a `staging_dir` of `parent`, to be moved into place whole:
    the staging folder's marker (and mkdtemp's mode 0700) stay behind when it is moved."""
    with staging_dir(parent, name) as staging:
        tree = staging / name
        tree.mkdir()
        yield tree


# renameat2(2) flags (linux/fs.h).
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


class _NoExchange(Exception):
    """renameat2 with these flags is not available here (not Linux, old kernel, or a
    filesystem such as NFS that does not implement the flag)."""


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        libc.renameat2.restype = ctypes.c_int
    except (OSError, AttributeError):  # glibc < 2.28 or another libc without the wrapper
        return None
    return libc


def _renameat2(src: Path, dst: Path, flags: int) -> None:
    libc = _libc()
    if libc is None:
        raise _NoExchange
    # Audited like os.rename, which ctypes calls are not: tests stop or kill a run at this step.
    sys.audit("astrago_deploy.renameat2", src, dst, flags)
    if libc.renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise _NoExchange
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


def replace_dir(staged: Path, dest: Path) -> None:
    """Move the complete tree `staged` to `dest`, replacing any existing `dest`; `staged` is gone after.

    On Linux the two trees are swapped with one `renameat2(RENAME_EXCHANGE)`: at every instant
    `dest` is a real directory holding either the old tree or the new one (helm and every other
    reader sees a plain folder, no symlink), and the old tree, now at `staged`, is deleted
    afterwards. When `dest` does not exist, `RENAME_NOREPLACE` puts the new tree there without
    ever overwriting a tree that another run put there meanwhile; two runs replacing one `dest`
    at once both succeed and the last one's tree stays. Where the kernel or filesystem lacks
    `renameat2` (another OS, NFS), the old tree is renamed aside first, which leaves a moment
    without `dest`; `leftovers.prune_leftovers` puts back a tree a crash left aside.
    """
    try:
        while True:
            try:
                _renameat2(staged, dest, _RENAME_NOREPLACE)
                return
            except FileExistsError:
                pass
            try:
                _renameat2(staged, dest, _RENAME_EXCHANGE)
                break
            except FileNotFoundError:
                if not staged.exists():
                    raise
                continue  # `dest` was removed between the two calls: place the tree as new
    except _NoExchange:
        _replace_by_renaming_aside(staged, dest)
        return
    # The old tree, swapped out of `dest`; `dest` is already right, so a failure here is no failure
    # of the replacement. Renamed aside before deleting, so a kill leaves a `.NAME.del-PID` tree.
    try:
        remove_dir(staged)
    except OSError:
        shutil.rmtree(staged, ignore_errors=True)


def _replace_by_renaming_aside(staged: Path, dest: Path) -> None:
    old: Path | None = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        dest.rename(old)
    try:
        staged.rename(dest)
    except BaseException:
        if old is not None:
            old.rename(dest)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Remove a tree by first renaming it aside, so a crash never leaves half a tree."""
    if not path.exists():
        return
    aside = path.with_name(f".{path.name}.del-{os.getpid()}")
    if aside.exists():  # what this pid left earlier, when an earlier deletion failed
        shutil.rmtree(aside, ignore_errors=True)
    path.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


class FileTransaction:
    """Several file writes that land together or not at all.

    `write()` only records; `commit()` writes each file atomically and, if a later write
    fails, puts back what the earlier ones replaced.
    """

    def __init__(self) -> None:
        self._pending: dict[Path, str] = {}

    def write(self, path: Path, text: str) -> None:
        self._pending[path] = text

    @property
    def paths(self) -> list[Path]:
        return list(self._pending)

    def commit(self) -> None:
        # Previous contents are kept as bytes: a rollback restores them exactly (CRLF too).
        done: list[tuple[Path, bytes | None]] = []
        try:
            for path, text in self._pending.items():
                previous = path.read_bytes() if path.exists() else None
                write_text(path, text)
                done.append((path, previous))
        except BaseException:
            for path, previous in reversed(done):
                if previous is None:
                    path.unlink(missing_ok=True)
                else:
                    write_bytes(path, previous)
            raise
