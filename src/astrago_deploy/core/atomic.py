"""Atomic file and directory writes.

Content is built next to its destination (same filesystem), flushed, then renamed into
place, so a crash leaves either the old state or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{prefix}.", suffix=".staging", dir=parent))
    try:
        mark(tmp, f"staging {prefix}")
        yield tmp
    finally:
        # Renamed aside first (remove_dir): killed part-way, it never loses its marker first.
        remove_dir(tmp)


def replace_dir(staged: Path, dest: Path) -> None:
    """Move the complete tree `staged` to `dest`, replacing any existing `dest`.

    The old tree is first renamed aside, so at every instant `dest` is either the old
    tree or the new one; the old one is deleted only after the new one is in place.
    """
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
