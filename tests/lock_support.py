"""Holding the charts lock from another process, so a test can show what a run does meanwhile.

The lock is re-entrant within a process, so the holder must be a separate process; it takes
the lock through the package's own API (the same flock a real sync or render takes), says
`held`, and keeps it until the test closes its stdin.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

HOLDER = """
import sys
from astrago_deploy.core.layout import RepoLayout
from astrago_deploy.core.locks import charts_lock
lock = charts_lock(RepoLayout.at(sys.argv[1]))
with getattr(lock, sys.argv[2])(sys.argv[3], wait=60):
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextlib.contextmanager
def charts_lock_held(root: Path, mode: str = "exclusive", purpose: str = "charts.sync") -> Iterator[int]:
    """The charts lock of the checkout at `root`, held by another process; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root), mode, purpose],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0


def read_until(stream: object, needle: str) -> str:
    """Lines of a text pipe up to and including the first that contains `needle` (all of them if
    the pipe ends first: the caller's assertion then shows what came instead)."""
    seen = []
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        seen.append(line)
        if needle in line:
            break
    return "".join(seen)
