"""The marker that every temporary folder of the suite carries.

A temporary worktree or staging folder holds `.astrago-temp`: the pid and start time of the
process that made it and what it is for. A run that is killed cannot clean up after itself;
the marker lets the next run tell a crashed run's folder (owner gone) from a running one's
(owner alive) and from a folder that is not ours at all (no marker).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

MARKER_NAME = ".astrago-temp"


def process_start(pid: int) -> int | None:
    """The start time of `pid` in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[19]) if len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass(frozen=True)
class TempMarker:
    pid: int
    started: int | None
    purpose: str
    created: str

    def owner_alive(self) -> bool:
        if not pid_alive(self.pid):
            return False
        # A pid whose start time differs belongs to a newer process: the owner is gone.
        return self.started is None or process_start(self.pid) in (None, self.started)


def mark(folder: Path, purpose: str) -> TempMarker:
    """Write the marker of this process into `folder` (which must exist)."""
    marker = TempMarker(
        os.getpid(), process_start(os.getpid()), purpose, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    )
    payload = {"pid": marker.pid, "started": marker.started, "purpose": purpose, "created": marker.created}
    (folder / MARKER_NAME).write_text(json.dumps(payload) + "\n", encoding="utf-8")
    return marker


def read_marker(folder: Path) -> TempMarker | None:
    """The marker in `folder`, or None if there is none (or it is unreadable: not ours)."""
    try:
        data = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
        started = data.get("started")
        return TempMarker(
            int(data["pid"]),
            int(started) if started is not None else None,
            str(data.get("purpose", "")),
            str(data.get("created", "")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
