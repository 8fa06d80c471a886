"""Readers-writer locks between processes of the suite, and the charts lock built on one.

`charts/external` is rewritten by `charts.sync`/`charts.add` and read by render, validate, diff,
deploy, charts.verify and upgrade. Writers hold `.cache/charts.lock` exclusively and readers
hold it shared (`flock`, so the kernel drops a lock whose process died: no stale lock file to
clean up). A lock is re-entrant within a process: a render inside a diff that already holds
the charts lock shared takes no second lock. A waiting run says once what it waits for, and
gives up after a bounded wait (`ASTRAGO_LOCK_WAIT` seconds) with a one-line error.

The exclusive holder writes its pid and purpose into the lock file so a waiting run can name
it; who holds a lock shared is read from `/proc/locks` (Linux), where there is one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from astrago_deploy.core.errors import AstragoError, InputError
from astrago_deploy.core.layout import RepoLayout

WAIT_ENV = "ASTRAGO_LOCK_WAIT"
DEFAULT_WAIT_SECONDS = 300.0
POLL_SECONDS = 0.1


class LockBusyError(AstragoError):
    """Another run held a lock for longer than this run was willing to wait."""


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wait_seconds() -> float:
    """How long to wait for a lock: `ASTRAGO_LOCK_WAIT` seconds, else DEFAULT_WAIT_SECONDS."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_WAIT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0 or seconds == float("inf"):
        raise InputError(f"{WAIT_ENV}={raw!r} is not a number of seconds (e.g. {WAIT_ENV}=600)")
    return seconds


@dataclass
class _Held:
    fd: int
    mode: int  # fcntl.LOCK_SH or fcntl.LOCK_EX
    count: int


# What this process holds, by lock file; `_guard` protects the table, and each lock file has
# its own acquisition lock so threads of one process take a lock file one at a time.
_held: dict[str, _Held] = {}
_acquiring: dict[str, threading.Lock] = {}
_guard = threading.Lock()


@dataclass(frozen=True)
class Holder:
    pid: int
    exclusive: bool


def holders(lock_file: Path) -> list[Holder] | None:
    """The processes holding `lock_file` (flock), from /proc/locks; None where that is unreadable."""
    try:
        table = Path("/proc/locks").read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        st = os.stat(lock_file)
    except OSError:
        return []
    found = []
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters are "1: -> FLOCK ..."
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if int(inode) != st.st_ino or os.makedev(int(major, 16), int(minor, 16)) != st.st_dev:
                continue
            found.append(Holder(int(fields[4]), fields[3] == "WRITE"))
        except ValueError:
            continue
    return found


class ReadersWriterLock:
    """A lock file that many readers may hold at once (`shared`) or one writer (`exclusive`)."""

    def __init__(self, lock_file: Path, what: str, shown: str | None = None) -> None:
        self.lock_file = lock_file
        self.what = what  # what the lock protects, for messages: "charts/external"
        self.shown = shown or str(lock_file)

    @contextlib.contextmanager
    def shared(
        self, purpose: str, wait: float | None = None, notify: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the lock for reading (many readers, no writer) for the `with` block."""
        with self._holding(fcntl.LOCK_SH, purpose, wait, notify):
            yield

    @contextlib.contextmanager
    def exclusive(
        self, purpose: str, wait: float | None = None, notify: Callable[[str], None] | None = None
    ) -> Iterator[None]:
        """Hold the lock alone (no reader, no other writer) for the `with` block."""
        with self._holding(fcntl.LOCK_EX, purpose, wait, notify):
            yield

    @contextlib.contextmanager
    def _holding(
        self, mode: int, purpose: str, wait: float | None, notify: Callable[[str], None] | None
    ) -> Iterator[None]:
        key = os.path.realpath(self.lock_file)
        with _guard:
            acquiring = _acquiring.setdefault(key, threading.Lock())
        with acquiring:
            with _guard:
                held = _held.get(key)
                if held is not None:
                    if mode == fcntl.LOCK_EX and held.mode == fcntl.LOCK_SH:
                        # Upgrading in place would let another writer in between: a bug in the caller.
                        raise RuntimeError(f"{self.lock_file}: exclusive lock requested while holding it shared")
                    held.count += 1
            if held is None:
                fd = self._acquire(mode, purpose, wait_seconds() if wait is None else wait, notify or _to_stderr)
                with _guard:
                    _held[key] = held = _Held(fd, mode, 1)
        try:
            yield
        finally:
            with _guard:
                held.count -= 1
                if held.count == 0:
                    del _held[key]
                    if held.mode == fcntl.LOCK_EX:
                        os.ftruncate(held.fd, 0)
                    os.close(held.fd)  # closing the last descriptor releases the flock

    def _acquire(self, mode: int, purpose: str, wait: float, notify: Callable[[str], None]) -> int:
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        # Never truncated on open: the exclusive holder's note must survive other runs opening it.
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            deadline = time.monotonic() + wait
            told = False
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                holder = self._describe_holder(fd)
                if time.monotonic() >= deadline:
                    raise LockBusyError(
                        f"{self.what} is in use by {holder} ({self.shown}); gave up after {wait:g}s: "
                        f"try again when it ends, or wait longer with {WAIT_ENV}=SECONDS"
                    )
                if not told:
                    told = True
                    reading = "" if self._writer_note(fd) else f" reading {self.what}"
                    notify(f"{purpose}: waiting for {holder}{reading} to finish...")
                time.sleep(POLL_SECONDS)
            if mode == fcntl.LOCK_EX:
                note = json.dumps({"pid": os.getpid(), "purpose": purpose}) + "\n"
                os.ftruncate(fd, 0)
                os.pwrite(fd, note.encode("utf-8"), 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _writer_note(self, fd: int) -> tuple[int, str] | None:
        """The exclusive holder's pid and purpose, if the lock file carries a note of a live writer."""
        try:
            data = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
            pid, purpose = int(data["pid"]), str(data["purpose"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        table = holders(self.lock_file)
        # Without /proc/locks the note is trusted; with it, only when that pid holds the lock
        # exclusively (a writer killed with SIGKILL leaves its note behind).
        return (pid, purpose) if table is None or Holder(pid, True) in table else None

    def _describe_holder(self, fd: int) -> str:
        note = self._writer_note(fd)
        if note is not None:
            return f"{note[1]} (pid {note[0]})"
        pids = sorted({h.pid for h in holders(self.lock_file) or []})
        if not pids:
            return "another run"
        return f"pid {', '.join(map(str, pids))}"


def charts_lock(layout: RepoLayout) -> ReadersWriterLock:
    """The lock over `charts/external`: sync and add hold it exclusive, readers shared."""
    shown = layout.charts_lock.relative_to(layout.root)
    return ReadersWriterLock(layout.charts_lock, "charts/external", str(shown))
