"""Progress of long runs: the events (`Progress`, silent by default) and their display
(`ConsoleProgress`: a rich progress bar on a terminal, plain lines otherwise).

A plain line carries the seconds since the display started, so its clock runs from the moment
the display exists: events may arrive without a `begin` (`charts.add` stages one chart
directly), and a time must never be measured from an unset start.
"""

from __future__ import annotations

import sys
import threading
import time

import rich.progress
from rich.console import Console
from rich.progress import BarColumn, TaskID, TextColumn, TimeElapsedColumn


class Progress:
    """Receives progress events; the CLI shows them (a bar on a terminal, lines otherwise)."""

    def begin(self, total: int, title: str) -> None:
        pass

    def step(self, name: str, message: str) -> None:
        pass

    def end(self) -> None:
        pass


class ConsoleProgress(Progress):
    def __init__(self) -> None:
        self._console = Console(stderr=True)
        self._bar: rich.progress.Progress | None = None
        self._task: TaskID | None = None
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def begin(self, total: int, title: str) -> None:
        self._started = time.monotonic()
        if total and self._console.is_terminal:
            self._bar = rich.progress.Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(title, total=total)

    def step(self, name: str, message: str) -> None:
        with self._lock:
            if self._bar is not None and self._task is not None:
                self._bar.update(
                    self._task, description=f"{name}: {message}", advance=1 if message == "verified" else 0
                )
            else:
                print(f"  {name}: {message} ({time.monotonic() - self._started:.1f}s)", file=sys.stderr, flush=True)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class ByteProgress:
    """Progress of a transfer by bytes: a rich bar with speed on a terminal, otherwise a line
    on stderr at every tenth of the total. `advance` may be called from several threads."""

    def __init__(self, total: int, title: str) -> None:
        self.total = max(total, 0)
        self.title = title
        self.done = 0
        self._console = Console(stderr=True)
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._next_line = self.total / 10
        self._bar: rich.progress.Progress | None = None
        self._task: TaskID | None = None
        if self.total and self._console.is_terminal:
            self._bar = rich.progress.Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                rich.progress.DownloadColumn(),
                rich.progress.TransferSpeedColumn(),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(title, total=self.total)

    def advance(self, size: int) -> None:
        with self._lock:
            self.done += size
            if self._bar is not None and self._task is not None:
                self._bar.update(self._task, advance=size)
            elif self.total and self.done >= self._next_line:
                self._next_line += self.total / 10
                seconds = time.monotonic() - self._started
                print(f"  {self.title}: {self.done / 1e6:.1f} of {self.total / 1e6:.1f} MB "
                      f"({self.done / max(seconds, 1e-6) / 1e6:.1f} MB/s)", file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
